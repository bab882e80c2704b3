"""Routes and their OpenAPI operations are declared together (:mod:`gateway.routes`): the app
serves exactly the declared routes, each has an operation, and each error a route documents is
one its declared ``raises`` can produce.

That the declarations hold what the code does is checked on every request the tests send
(:mod:`tests.declared_errors`).
"""

from __future__ import annotations

import ast
from dataclasses import replace
from pathlib import Path

import pytest
from starlette.routing import Route

from gateway.app import create_app
from gateway.errors import ApiError, ArtifactNotFound, StudyNotFound, error_classes
from gateway.openapi import openapi_document
from gateway.routes import ENDPOINTS, endpoints
from gateway.settings import Settings
from tests.conftest import REPOSITORY_ROOT
from tests.gateway.service.test_app import Catalog, TritonHealth

GATEWAY = REPOSITORY_ROOT / "gateway"
ROUTE_MODULES = {
    f"gateway.routes.{path.stem}"
    for path in (GATEWAY / "routes").glob("*.py")
    if path.stem not in {"__init__", "endpoint"}
}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_env({"UPLOAD_DIR": str(tmp_path)})


def served(settings: Settings) -> set[tuple[str, str]]:
    app = create_app(settings, triton=TritonHealth(), catalog=Catalog({}))
    return {
        (method, route.path)
        for route in app.routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"  # Starlette's implicit twin of each GET
    }


def documented(document: dict[str, object]) -> set[tuple[str, str]]:
    paths = document["paths"]
    assert isinstance(paths, dict)
    return {(method.upper(), path) for path, item in paths.items() for method in item}


@pytest.mark.parametrize("viewer", [True, False])
def test_every_route_of_the_app_has_an_operation_and_no_other(
    settings: Settings, viewer: bool
) -> None:
    settings = replace(settings, viewer=viewer)
    document = openapi_document(settings, endpoints(settings))
    assert served(settings) == documented(document)
    assert any(path.startswith("/viewer") for _, path in served(settings)) is viewer


def test_each_documented_error_is_one_the_route_raises() -> None:
    settings = Settings.from_env({})
    document = openapi_document(settings, list(ENDPOINTS))
    by_status = {cls.code: cls.status for cls in error_classes()}
    for endpoint in ENDPOINTS:
        operation = document["paths"][endpoint.path][endpoint.method.lower()]
        can_produce = {cls.code for cls in endpoint.errors}
        listed: set[str] = set()
        for status, response in operation["responses"].items():
            codes = response.get("x-error-codes", [])
            for code in codes:
                assert code in can_produce, (endpoint.path, code)
                assert str(by_status[code]) == status, (endpoint.path, code, status)
                assert f"`{code}`" in response["description"]
            listed.update(codes)
        assert listed == can_produce, endpoint.path


def test_raises_name_classes_a_client_can_see() -> None:
    """A parent-only class has no code: declaring one would document nothing (or its children,
    which the route may never raise)."""
    visible = set(error_classes())
    for endpoint in ENDPOINTS:
        for cls in endpoint.raises:
            assert issubclass(cls, ApiError) and cls in visible, (endpoint.path, cls)


def test_invocations_do_not_document_the_errors_of_other_routes() -> None:
    document = openapi_document(Settings.from_env({}), list(ENDPOINTS))
    for path in ["/invocations", "/models/{name}/invocations"]:
        responses = document["paths"][path]["post"]["responses"]
        codes = {code for r in responses.values() for code in r.get("x-error-codes", [])}
        assert StudyNotFound.code not in codes and ArtifactNotFound.code not in codes
        assert {"file_mismatch", "server_busy", "triton_timeout", "table_window"} <= codes
    pacs = document["paths"]["/dicomweb/invocations"]["post"]["responses"]
    assert StudyNotFound.code in pacs["404"]["x-error-codes"]


def _imports(path: Path) -> set[str]:
    """The modules ``path`` imports, as absolute names (``from gateway import x`` names both)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_no_module_imports_a_route_module_or_the_command_line() -> None:
    """Routes share what they need through modules that are no route's (intake, runner); the
    route table (``gateway/routes/__init__.py``) is the one place that lists them. No code
    imports ``gateway.__main__`` (the command-line test checks the console script is it)."""
    table = GATEWAY / "routes" / "__init__.py"
    packages = ["gateway", "aicoco", "triton_local", "benchmarks", "training", "tests"]
    for path in [p for package in packages for p in (REPOSITORY_ROOT / package).rglob("*.py")]:
        imported = _imports(path)
        if path != Path(__file__).with_name("test_cli.py"):
            assert "gateway.__main__" not in imported, path
        if path != table:
            assert not imported & ROUTE_MODULES, (path, imported & ROUTE_MODULES)


def test_paths_do_not_come_from_where_the_package_is_installed() -> None:
    """The model repository and the docs are the caller's (settings, arguments, the working
    directory); the package reads only its own data, through importlib.resources."""
    for path in GATEWAY.rglob("*.py"):
        assert "__file__" not in path.read_text(), path

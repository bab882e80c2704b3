"""compose.yaml: the structure Triton and the gateway need, checked without a Docker engine.

What only a machine with Docker and a GPU can show (the image pulls, the GPU actually granted, the
native ONNX Runtime backend loading our models) is listed in the README; these tests pin down
everything that can be read from the file: the pinned image, the GPU reservation, Triton's loading
mode (the same as the local launcher's), the health checks and the gateway's settings. When a
Compose CLI is on the machine, `config` must also accept the file.
"""

from __future__ import annotations

import ast
import itertools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.settings import Settings, declarations

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "compose.yaml"
LAUNCHER = REPO / "triton_local" / "launcher.py"

# How Triton loads the repository: these must be the same in compose and in the local launcher.
LOADING_FLAGS = (
    "model-control-mode",
    "exit-on-error",
    "strict-readiness",
    "disable-auto-complete-config",
)

# Settings that compose sets on purpose to something other than the gateway's default.
COMPOSE_OVERRIDES = {"TRITON_URL", "UPLOAD_DIR", "HOST"}

_INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?-)(?P<default>[^}]*))?\})"
)


def interpolate(value: str, environ: Mapping[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}`, `${VAR-default}` and `$$`, as `config` reads them."""

    def substitute(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        name = match.group("name")
        op = match.group("op")
        if op is None:
            return environ.get(name, "")
        if op == ":-":
            return environ.get(name) or match.group("default")
        return environ.get(name, match.group("default"))

    return _INTERPOLATION.sub(substitute, value)


def resolve(node: Any, environ: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, environ)
    if isinstance(node, list):
        return [resolve(item, environ) for item in node]
    if isinstance(node, dict):
        return {key: resolve(value, environ) for key, value in node.items()}
    return node


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(document, dict), "compose.yaml must be a mapping"
    return document


@pytest.fixture(scope="module")
def compose(raw: dict[str, Any]) -> dict[str, Any]:
    """The file as `docker compose config` sees it with nothing set: every default applied."""
    resolved = resolve(raw, {})
    assert isinstance(resolved, dict)
    return resolved


@pytest.fixture(scope="module")
def triton(compose: dict[str, Any]) -> dict[str, Any]:
    service = compose["services"]["triton"]
    assert isinstance(service, dict)
    return service


@pytest.fixture(scope="module")
def gateway(compose: dict[str, Any]) -> dict[str, Any]:
    service = compose["services"]["gateway"]
    assert isinstance(service, dict)
    return service


def parse_options(arguments: Iterable[str]) -> dict[str, str]:
    """`--name=value` options by name; a bare `--name` has the value ""."""
    options: dict[str, str] = {}
    for argument in arguments:
        assert argument.startswith("--"), f"use --name=value: {argument!r}"
        name, _, value = argument[2:].partition("=")
        options[name] = value
    return options


def flags(service: Mapping[str, Any]) -> dict[str, str]:
    """Triton's options from the service's command (exec form)."""
    command = service["command"]
    assert isinstance(command, list), "Triton's command must be a list (exec form)"
    assert command[0] == "tritonserver"
    assert all(isinstance(argument, str) for argument in command)
    return parse_options(command[1:])


def local_launcher_flags() -> dict[str, str]:
    """The fixed options the local launcher passes to tritonserver, read from its source.

    Only literal arguments count (`"--exit-on-error=false"`); those built from the launcher's
    parameters (ports, paths, the poll interval) are f-strings and differ on purpose.
    """
    tree = ast.parse(LAUNCHER.read_text(encoding="utf-8"))
    in_fstrings = {
        id(part)
        for node in ast.walk(tree)
        if isinstance(node, ast.JoinedStr)
        for part in node.values
    }
    return parse_options(
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value.startswith("--")
        and id(node) not in in_fstrings
    )


def parse_bytes(size: str | int) -> int:
    if isinstance(size, int):
        return size
    match = re.fullmatch(r"(\d+)\s*([kmg]?)b?", size.strip().lower())
    assert match, f"unreadable size {size!r}"
    return int(match.group(1)) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[match.group(2)]


def env_names_read_by_settings() -> set[str]:
    """Ask the gateway's own settings loader which variables it reads."""

    class Recorder(Mapping[str, str]):
        def __init__(self) -> None:
            self.names: set[str] = set()

        def __getitem__(self, key: str) -> str:
            self.names.add(key)
            raise KeyError(key)

        def __iter__(self) -> Iterator[str]:
            return iter(())

        def __len__(self) -> int:
            return 0

    recorder = Recorder()
    Settings.from_env(recorder)
    assert recorder.names, "Settings.from_env read no variable through the mapping it was given"
    return recorder.names


# ---- Triton ----


def test_triton_image_is_nvidia_at_a_pinned_release(triton: dict[str, Any]) -> None:
    image = triton["image"]
    match = re.fullmatch(r"nvcr\.io/nvidia/tritonserver:(\d{2})\.(\d{2})-py3", image)
    assert match, f"Triton must be NVIDIA's image at a YY.MM-py3 tag, got {image!r}"
    assert 1 <= int(match.group(2)) <= 12


def test_triton_reserves_a_gpu(triton: dict[str, Any]) -> None:
    devices = triton["deploy"]["resources"]["reservations"]["devices"]
    assert len(devices) == 1
    device = devices[0]
    assert device["driver"] == "nvidia"
    assert "gpu" in device["capabilities"]
    count, ids = device.get("count"), device.get("device_ids")
    assert (count is None) != (ids is None), "set count or device_ids, not both"
    assert count == "all" or ids or (isinstance(count, int) and count >= 1)


def test_triton_has_shared_memory_and_ulimits(triton: dict[str, Any]) -> None:
    assert parse_bytes(triton["shm_size"]) >= 256 * 1024**2
    ulimits = triton["ulimits"]
    assert ulimits["memlock"] == -1
    assert ulimits["stack"] == 67108864


def test_triton_mounts_the_model_repository_read_only(triton: dict[str, Any]) -> None:
    (volume,) = triton["volumes"]
    assert volume["type"] == "bind"
    assert (REPO / volume["source"]).resolve() == REPO / "model_repository"
    assert volume["read_only"] is True
    assert flags(triton)["model-repository"] == volume["target"]


def test_triton_loads_models_as_the_product_needs(triton: dict[str, Any]) -> None:
    options = flags(triton)
    # Poll: a folder dropped into the repository is loaded without a restart.
    assert options["model-control-mode"] == "poll"
    assert int(options["repository-poll-secs"]) >= 1
    # A broken folder must not stop the server, nor keep it (and so the stack) unready.
    assert options["exit-on-error"] == "false"
    assert options["strict-readiness"] == "false"


def test_triton_loads_models_like_the_local_launcher(triton: dict[str, Any]) -> None:
    local = local_launcher_flags()
    options = flags(triton)
    for name in LOADING_FLAGS:
        assert name in local, f"the local launcher no longer passes --{name}: update LOADING_FLAGS"
        assert options.get(name) == local[name], f"--{name}: compose and triton_local differ"


def test_triton_health_is_its_readiness_endpoint(triton: dict[str, Any]) -> None:
    healthcheck = triton["healthcheck"]
    test = healthcheck["test"]
    assert test[0] == "CMD"
    assert "curl" in test
    assert any(part.endswith(":8000/v2/health/ready") for part in test)
    assert {"interval", "timeout", "retries", "start_period"} <= healthcheck.keys()


def test_triton_grpc_stays_internal_and_http_is_loopback_only(triton: dict[str, Any]) -> None:
    assert "8001" in [str(port) for port in triton["expose"]]
    published = [str(port) for port in triton.get("ports", [])]
    assert not any(port.endswith(":8001") for port in published)
    assert all(port.startswith("127.0.0.1:") for port in published)


# ---- gateway ----


def test_gateway_is_built_from_the_repository_dockerfile(gateway: dict[str, Any]) -> None:
    build = gateway["build"]
    assert (REPO / build["context"]).resolve() == REPO
    assert (REPO / build["dockerfile"]).is_file()


def test_gateway_image_is_tagged_with_the_project_version(gateway: dict[str, Any]) -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert gateway["image"] == f"{project['name']}:{project['version']}"


def test_gateway_waits_for_a_healthy_triton(gateway: dict[str, Any]) -> None:
    assert gateway["depends_on"]["triton"] == {"condition": "service_healthy"}


def test_the_postgres_profile_is_the_jobs_shared_store(
    compose: dict[str, Any], gateway: dict[str, Any]
) -> None:
    """Optional: started only with `--profile postgres`, waited for only when started, on a
    volume of its own, at the major release the tests run against."""
    postgres = compose["services"]["postgres"]
    assert postgres["profiles"] == ["postgres"]
    assert gateway["depends_on"]["postgres"] == {
        "condition": "service_healthy",
        "required": False,
    }
    assert postgres["image"] == "postgres:15"
    assert "pg_isready" in postgres["healthcheck"]["test"]
    assert any(v["target"] == "/var/lib/postgresql/data" for v in postgres["volumes"])
    assert "postgres" in compose["volumes"]


def test_jobs_outlive_a_restart_on_their_volume(
    compose: dict[str, Any], gateway: dict[str, Any]
) -> None:
    mounts = {v["target"]: v for v in gateway["volumes"]}
    jobs_dir = gateway["environment"]["JOBS_DIR"]
    assert mounts[jobs_dir]["type"] == "volume"
    assert mounts[jobs_dir]["source"] in compose["volumes"]


def test_gateway_reaches_triton_over_the_compose_network(
    gateway: dict[str, Any], triton: dict[str, Any]
) -> None:
    host, _, port = gateway["environment"]["TRITON_URL"].rpartition(":")
    assert host == "triton"
    assert port in [str(exposed) for exposed in triton["expose"]]
    assert flags(triton).get("grpc-port", "8001") == port


def test_gateway_environment_names_are_settings(gateway: dict[str, Any]) -> None:
    known = env_names_read_by_settings()
    unknown = set(gateway["environment"]) - known
    assert not unknown, f"compose sets variables the gateway does not read: {sorted(unknown)}"


def test_gateway_environment_passes_every_setting(gateway: dict[str, Any]) -> None:
    """Each setting is configurable from compose's own environment, not only by editing it."""
    missing = [d.variable for d in declarations() if d.variable not in gateway["environment"]]
    assert not missing, f"compose does not pass these settings to the gateway: {missing}"


def test_gateway_environment_passes_settings_validation(gateway: dict[str, Any]) -> None:
    environment = {name: str(value) for name, value in gateway["environment"].items()}
    assert Path(environment["UPLOAD_DIR"]).is_absolute()
    environment["UPLOAD_DIR"] = tempfile.gettempdir()
    Settings.from_env(environment)


def test_gateway_defaults_are_the_gateways_own(raw: dict[str, Any]) -> None:
    """A `${VAR:-default}` in compose repeats the gateway's default; it must not drift from it."""
    defaults = Settings()
    for name, value in raw["services"]["gateway"]["environment"].items():
        if name in COMPOSE_OVERRIDES or "${" not in str(value):
            continue
        resolved = interpolate(str(value), {})
        assert Settings.from_env({name: resolved}) == defaults, f"{name}={resolved!r} drifted"


def test_gateway_listens_where_compose_publishes(gateway: dict[str, Any]) -> None:
    port = gateway["environment"]["PORT"]
    (mapping,) = gateway["ports"]
    assert str(mapping).rpartition(":")[2] == port


def test_gateway_health_is_its_readiness(gateway: dict[str, Any]) -> None:
    test = gateway["healthcheck"]["test"]
    assert test[0] == "CMD"
    assert test[-1] == "/health/ready"


def test_gateway_is_restarted_and_locked_down(gateway: dict[str, Any]) -> None:
    assert gateway["restart"] in {"always", "unless-stopped", "on-failure"}
    assert gateway["read_only"] is True
    upload_dir = gateway["environment"]["UPLOAD_DIR"]
    mounts = [entry.partition(":")[0] for entry in gateway["tmpfs"]]
    assert upload_dir in mounts, "uploads need a writable tmpfs on a read-only root"
    assert gateway["cap_drop"] == ["ALL"]


def test_triton_restarts_too(triton: dict[str, Any]) -> None:
    assert triton["restart"] in {"always", "unless-stopped", "on-failure"}


def test_every_variable_compose_reads_is_a_setting_or_documented() -> None:
    """A knob compose adds of its own (a port, the image tag) is named in the file's header."""
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    header = "\n".join(itertools.takewhile(lambda line: line.startswith("#"), text.splitlines()))
    read = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text))
    documented = set(re.findall(r"\b[A-Z][A-Z0-9_]+\b", header))
    undocumented = read - env_names_read_by_settings() - documented
    assert not undocumented, f"document {sorted(undocumented)} at the top of compose.yaml"


# ---- the Compose CLI, where one is installed ----


def compose_commands() -> list[list[str]]:
    """Compose CLIs on this machine: the docker plugin and every standalone `docker-compose`
    (next to this interpreter, from a Python package, or on PATH: old and new ones differ)."""
    commands: list[list[str]] = []
    docker = shutil.which("docker")
    if docker and _runs([docker, "compose", "version"]):
        commands.append([docker, "compose"])
    folders = [str(Path(sys.executable).parent), *os.environ.get("PATH", "").split(os.pathsep)]
    seen: set[Path] = set()
    for folder in folders:
        candidate = Path(folder or ".") / "docker-compose"
        if candidate.is_file() and candidate.resolve() not in seen:
            seen.add(candidate.resolve())
            if _runs([str(candidate), "version"]):
                commands.append([str(candidate)])
    return commands


def _runs(command: list[str]) -> bool:
    try:
        return subprocess.run(command, capture_output=True, timeout=60, check=False).returncode == 0
    except OSError:
        return False


COMPOSE_COMMANDS = compose_commands()


@pytest.mark.skipif(not COMPOSE_COMMANDS, reason="no Docker Compose CLI on this machine")
@pytest.mark.parametrize("command", COMPOSE_COMMANDS, ids=" ".join)
def test_compose_cli_accepts_the_file(
    command: list[str], compose: dict[str, Any], tmp_path: Path
) -> None:
    """`config` validates against Compose's own schema and resolves the defaults as we do."""
    empty_env = tmp_path / "empty.env"
    empty_env.write_text("", encoding="utf-8")
    result = subprocess.run(
        [*command, "--env-file", str(empty_env), "-f", str(COMPOSE_FILE), "config"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
        # Nothing from the caller's shell (a DEFAULT_MODEL or TRITON_URL exported for a local
        # run) may change what the file resolves to.
        env={name: os.environ[name] for name in ("PATH", "HOME") if name in os.environ},
    )
    assert result.returncode == 0, result.stderr
    rendered = yaml.safe_load(result.stdout)
    for name in ("triton", "gateway"):
        ours, theirs = compose["services"][name], rendered["services"][name]
        assert theirs["image"] == ours["image"]
    environment = rendered["services"]["gateway"]["environment"]
    expected = compose["services"]["gateway"]["environment"]
    assert {key: str(value) for key, value in environment.items()} == {
        key: str(value) for key, value in expected.items()
    }


def test_triton_runs_on_jemalloc_as_the_soak_measured_it(triton: dict[str, Any]) -> None:
    from benchmarks.soak import TRITON_MALLOC_CONF

    environment = triton["environment"]
    assert environment["LD_PRELOAD"].endswith("/libjemalloc.so")
    assert environment["MALLOC_CONF"] == TRITON_MALLOC_CONF

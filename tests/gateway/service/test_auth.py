"""API keys: which routes ask for one, how a key is presented, what is refused and audited."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from gateway.app import create_app
from gateway.keys import digest, new_key, parse_entries
from gateway.settings import Settings, SettingsError
from tests.gateway.service.test_app import (
    Catalog,
    EchoPipeline,
    TritonHealth,
    assert_error,
    flavor_request,
    serving,
)

pytestmark = pytest.mark.anyio

FIRST, SECOND = "first-key-value", "second-key-value"
ENTRIES = f"ci:sha256:{digest(FIRST)},viewer:sha256:{digest(SECOND)}"
PROTECTED = [
    "/invocations",
    "/models/lesion_classifier/invocations",
    "/dicomweb/invocations",
    "/models/lesion_classifier/dicomweb/invocations",
    "/viewer/render",
]
OPEN = ["/ping", "/health/live", "/health/ready", "/metrics", "/models", "/openapi.json", "/docs"]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    folder = tmp_path / "uploads"
    folder.mkdir()
    return Settings.from_env(
        {"UPLOAD_DIR": str(folder), "API_KEYS": ENTRIES, "CPU_WORKERS": "1", "MAX_FILES": "3"}
    )


def app_for(settings: Settings) -> Starlette:
    catalog = Catalog({"lesion_classifier": EchoPipeline()})
    return create_app(settings, triton=TritonHealth(), catalog=catalog)


def test_exactly_the_routes_with_patient_data_are_protected(settings: Settings) -> None:
    """Every route that takes a body (images, a study) is protected, and the GET and DELETE
    routes that answer patient data (a tabular answer's records, a job and its result); no other
    route is."""
    app = create_app(settings, triton=TritonHealth(), catalog=Catalog({}))
    routes = [route for route in app.routes if isinstance(route, Route)]
    protected = {r.path for r in routes if getattr(r.endpoint, "protected", False)}
    with_body = {r.path for r in routes if "POST" in (r.methods or ())}
    answering = {"/invocations/artifacts/{name}", "/jobs/{id}", "/jobs/{id}/result"}
    assert protected - answering == with_body
    assert with_body == {
        "/invocations",
        "/models/{name}/invocations",
        "/dicomweb/invocations",
        "/models/{name}/dicomweb/invocations",
        "/jobs",
        "/models/{name}/jobs",
        "/dicomweb/jobs",
        "/models/{name}/dicomweb/jobs",
        "/viewer/render",
    }


async def test_protected_routes_refuse_without_a_key_and_take_each_key(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.access")
    async with serving(app_for(settings)) as client:
        for path in PROTECTED:
            refused = await client.post(path, **flavor_request("a.png"))
            error = assert_error(refused, 401, "unauthorized")
            assert "Authorization: Bearer" in error["message"] and "X-API-Key" in error["message"]
            assert refused.headers["www-authenticate"].startswith("Bearer")
        wrong = await client.post(
            "/invocations", headers={"X-API-Key": "guess"}, **flavor_request("a.png")
        )
        assert (
            "not one of this gateway's keys" in assert_error(wrong, 401, "unauthorized")["message"]
        )
        for headers in (
            {"Authorization": f"Bearer {FIRST}"},
            {"X-API-Key": FIRST},
            {"authorization": f"bearer {SECOND}"},
            {"X-API-Key": SECOND},
        ):
            accepted = await client.post("/invocations", headers=headers, **flavor_request("a.png"))
            assert accepted.status_code == 200, accepted.text
        for path in [*OPEN, "/viewer", "/viewer/viewer.js"]:
            assert (await client.get(path)).status_code < 400, path
    audits = [r for r in caplog.records if getattr(r, "audit", False)]
    assert [(r.status, r.key) for r in audits][-4:] == [  # type: ignore[attr-defined]
        (200, "ci"),
        (200, "ci"),
        (200, "viewer"),
        (200, "viewer"),
    ]
    last = audits[-1]
    assert (last.model, last.files, last.route) == (  # type: ignore[attr-defined]
        "lesion_classifier",
        1,
        "/invocations",
    )
    assert last.bytes == len(b"pixels of a.png")  # type: ignore[attr-defined]
    # Refusals are audited too, without a key id.
    assert (audits[0].status, audits[0].key) == (401, None)  # type: ignore[attr-defined]
    assert not any(
        "a.png" in r.getMessage() or "a.png" in json.dumps(r.__dict__, default=str)
        for r in caplog.records
    )


async def test_every_protected_route_takes_each_key(settings: Settings) -> None:
    """Past the key check with each key; what follows may refuse the request for its own
    reasons (DICOMweb is off here, a.png is not a real PNG), never with a 401."""
    async with serving(app_for(settings)) as client:
        for path in PROTECTED:
            for key in (FIRST, SECOND):
                request = flavor_request("a.png")
                past = await client.post(path, headers={"X-API-Key": key}, **request)
                assert past.status_code != 401, (path, past.text)


async def test_without_keys_everything_is_open_and_audited_as_no_key(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.access")
    async with serving(app_for(replace(settings, api_keys=()))) as client:
        assert (await client.post("/invocations", **flavor_request("a.png"))).status_code == 200
    (record,) = [r for r in caplog.records if getattr(r, "audit", False)]
    assert record.key == "-"  # type: ignore[attr-defined]


def test_key_entries_files_and_tls_settings(tmp_path: Path) -> None:
    key, entry = new_key("rotating")
    (keys,) = parse_entries(entry, ",")
    assert keys.matches(key) and not keys.matches(key + "x")
    listing = tmp_path / "keys"
    listing.write_text(f"# the CI's key\n{entry}  # since December\n\n")
    settings = Settings.from_env({"API_KEYS_FILE": str(listing), "API_KEYS": ENTRIES})
    assert [k.id for k in settings.keys] == ["ci", "viewer", "rotating"]
    for variables, message in [
        ({"API_KEYS": "ci:plain-text-key"}, "API_KEYS: 'ci:plain-text-key' is not an API key"),
        ({"API_KEYS": f"{ENTRIES},ci:sha256:{digest('x')}"}, "unique, repeated: ci"),
        ({"API_KEYS_FILE": str(tmp_path / "none")}, "API_KEYS_FILE must be a readable file"),
        ({"API_KEYS": entry, "API_KEYS_FILE": str(listing)}, "same key id twice: rotating"),
        ({"TLS_CERT_FILE": str(listing)}, "TLS_CERT_FILE and TLS_KEY_FILE go together"),
        ({"TLS_KEY_FILE": str(tmp_path / "no.pem")}, "TLS_KEY_FILE must be an existing file"),
    ]:
        with pytest.raises(SettingsError, match=message):
            Settings.from_env(variables)
    with pytest.raises(ValueError, match="not a key id"):
        new_key("has space")

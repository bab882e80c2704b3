"""HTTPS served by the gateway itself, and API keys, over real TCP against the real gateway."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.keys import new_key
from tests.e2e.conftest import REPOSITORY_ROOT, StartGateway
from tests.factories import chest_png
from triton_local import LocalTriton

pytestmark = pytest.mark.e2e


def test_tls_with_keys_serves_https_only_and_asks_for_a_key(
    triton: LocalTriton, start_gateway: StartGateway, certificate: tuple[Path, Path]
) -> None:
    cert, key_file = certificate
    key, entry = new_key("e2e")
    env = {"TLS_CERT_FILE": str(cert), "TLS_KEY_FILE": str(key_file), "API_KEYS": entry}
    url, _ = start_gateway(triton.grpc_url, env)
    assert url.startswith("https://")
    images = json.dumps([{"id": "a", "file_name": "chest.png", "index": 0}])
    request: dict[str, Any] = {
        "files": [("files", ("chest.png", chest_png()))],
        "data": {"images": images},
    }
    trusted = ssl.create_default_context(cafile=str(cert))
    with httpx.Client(base_url=url, verify=trusted, timeout=120) as client:
        assert client.get("/health/live").status_code == 200
        refused = client.post("/invocations", **request)
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "unauthorized"
        answered = client.post(
            "/invocations", headers={"Authorization": f"Bearer {key}"}, **request
        )
        assert answered.status_code == 200, answered.text
        assert client.get("/models").status_code == 200
    # The certificate is checked: without trusting it, a client refuses the connection.
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{url}/health/live", timeout=10)
    # Plain HTTP on the TLS port gets no HTTP answer.
    with pytest.raises(httpx.TransportError):
        httpx.get(url.replace("https://", "http://") + "/health/live", timeout=10)
    # The image's health probe follows TLS_CERT_FILE to HTTPS.
    port = url.rsplit(":", 1)[1]
    probe = subprocess.run(
        [sys.executable, str(REPOSITORY_ROOT / "docker" / "healthcheck.py"), "/health/live"],
        env={**os.environ, "PORT": port, "TLS_CERT_FILE": str(cert)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert probe.returncode == 0, probe.stdout


def test_audit_lines_carry_no_patient_data(
    triton: LocalTriton, start_gateway: StartGateway, tmp_path: Path
) -> None:
    """One audit line per request, with key id, model, files and bytes; no file name anywhere
    in the gateway's log, for an accepted request, a refused file and a 5xx-free error."""
    key, entry = new_key("auditor")
    url, upload_dir = start_gateway(triton.grpc_url, {"API_KEYS": entry})
    secret_name = "Doe_Jane_1970-01-01.png"
    images = json.dumps([{"id": "a", "file_name": secret_name, "index": 0}])
    headers = {"X-API-Key": key}
    with httpx.Client(base_url=url, timeout=120, headers=headers) as client:
        ok = client.post(
            "/invocations",
            files=[("files", (secret_name, chest_png()))],
            data={"images": images},
        )
        assert ok.status_code == 200, ok.text
        bad = client.post(
            "/invocations",
            files=[("files", (secret_name, b"not an image"))],
            data={"images": images},
        )
        assert bad.status_code == 415
    log = upload_dir.parent / "gateway.log"
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    audits = [line for line in lines if line.get("audit")]
    assert [(a["key"], a["model"], a["files"], a["status"]) for a in audits[-2:]] == [
        ("auditor", "lesion_classifier", 1, 200),
        ("auditor", "lesion_classifier", 1, 415),
    ]
    assert audits[-2]["bytes"] == len(chest_png())
    assert "Doe_Jane" not in log.read_text()

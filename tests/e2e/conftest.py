"""A real gateway for end-to-end tests: ``python -m gateway serve`` in a subprocess, over HTTP.

A subprocess rather than a thread: the command line, the settings from the environment, hypercorn
and the shutdown path are exercised as users run them, and a gateway that hangs cannot hang the
test process. Each gateway gets its own upload folder so tests can check nothing is left there.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.declared_errors import MESSAGE, answers_in_log, undeclared
from tests.processes import terminate
from triton_local import LocalTriton, free_port

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0

StartGateway = Callable[[str, Mapping[str, str]], tuple[str, Path]]
"""``start_gateway(triton_url, env) -> (base_url, upload_dir)``."""


class GatewayProcess:
    """``python -m gateway serve`` (or ``command``, a program that serves the gateway), by this
    interpreter from the repository unless ``python`` and ``cwd`` say otherwise."""

    def __init__(
        self,
        folder: Path,
        triton_url: str,
        env: Mapping[str, str],
        command: Sequence[str] = ("-m", "gateway", "serve"),
        python: Path | str = sys.executable,
        cwd: Path = REPOSITORY_ROOT,
    ) -> None:
        self.upload_dir = folder / "uploads"
        self.upload_dir.mkdir(parents=True)
        self.log_path = folder / "gateway.log"
        port = free_port()
        certificate = env.get("TLS_CERT_FILE")
        self.url = f"{'https' if certificate else 'http'}://127.0.0.1:{port}"
        self.verify = ssl.create_default_context(cafile=certificate) if certificate else True
        environment = {
            **os.environ,
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "TRITON_URL": triton_url,
            "UPLOAD_DIR": str(self.upload_dir),
            # Its own jobs: gateways sharing a JOBS_DIR share their jobs, and the tests' gateways
            # differ (another PACS, wrong credentials) where real replicas would not.
            "JOBS_DIR": str(folder / "jobs"),
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "INFO",
            **env,
        }
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [str(python), *command],
                cwd=cwd,
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_until_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(
                    f"the gateway exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            try:
                ready = httpx.get(f"{self.url}/health/ready", timeout=5, verify=self.verify)
                if ready.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        pytest.fail(f"the gateway was not ready after {START_TIMEOUT_S:g} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                pytest.fail(f"the gateway ignored SIGTERM:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture(scope="module")
def start_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartGateway]:
    """Start gateways for this test module; each is stopped (SIGTERM) when the module ends."""
    started: list[GatewayProcess] = []

    def start(triton_url: str, env: Mapping[str, str]) -> tuple[str, Path]:
        gateway = GatewayProcess(tmp_path_factory.mktemp("gateway"), triton_url, env)
        started.append(gateway)
        gateway.wait_until_ready()
        return gateway.url, gateway.upload_dir

    try:
        yield start
    finally:
        for gateway in reversed(started):
            gateway.stop()
        for gateway in started:
            assert gateway.process.returncode == 0, gateway.log_tail()
            wrong = undeclared(answers_in_log(gateway.log_path))
            assert not wrong, f"{MESSAGE}: {wrong}"


TIMEOUT_S = 300.0
"""Bounds a request so a hung gateway fails the test instead of the run; not a measurement."""


@pytest.fixture(scope="module")
def http(triton: LocalTriton, start_gateway: StartGateway) -> Iterator[httpx.Client]:
    """A client of a gateway with default settings on the session's local Triton."""
    url, _ = start_gateway(triton.grpc_url, {})
    with httpx.Client(base_url=url, timeout=TIMEOUT_S) as client:
        yield client


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, from the openssl command."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed: it makes the test's certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    request = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=x"]
    names = ["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"]
    subprocess.run(
        [openssl, *request, *names, "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


# A real PACS: Orthanc with its DICOMweb plugin, from Debian's packages.

ORTHANC_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
USER, PASSWORD = "gateway", "pacs-secret"
ORTHANC_START_TIMEOUT_S = 60.0


@dataclass
class Orthanc:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    def rest(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, auth=(USER, PASSWORD), timeout=60)

    def upload(self, paths: list[Path]) -> None:
        with self.rest() as client:
            for path in paths:
                client.post("/instances", content=path.read_bytes()).raise_for_status()

    def instance(self, sop_instance_uid: str) -> bytes:
        """A stored instance's file, found by its UID through Orthanc's REST API."""
        with self.rest() as client:
            found = client.post(
                "/tools/find",
                json={"Level": "Instance", "Query": {"SOPInstanceUID": sop_instance_uid}},
            ).json()
            assert len(found) == 1, f"Orthanc holds {len(found)} instances {sop_instance_uid}"
            return client.get(f"/instances/{found[0]}/file").content


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    program = shutil.which("Orthanc")
    if program is None or not ORTHANC_PLUGIN.is_file():
        pytest.skip(
            "Orthanc with its DICOMweb plugin is not installed: `make test` installs Debian's "
            "orthanc and orthanc-dicomweb packages when it runs as root on Debian"
        )
    folder = tmp_path_factory.mktemp("orthanc")
    port = free_port()
    config = {
        "Name": "test-pacs",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "storage"),
        "HttpPort": port,
        "DicomServerEnabled": False,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {USER: PASSWORD},
        "Plugins": [str(ORTHANC_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    (folder / "orthanc.json").write_text(json.dumps(config))
    log = folder / "orthanc.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [program, str(folder / "orthanc.json")], stdout=out, stderr=subprocess.STDOUT
        )
    server = Orthanc(f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + ORTHANC_START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            pytest.fail(f"Orthanc exited with {process.returncode}:\n{log.read_text()[-2000:]}")
        try:
            with server.rest() as client:
                if client.get("/system").status_code == 200:
                    break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"Orthanc did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.2)
    try:
        yield server
    finally:
        terminate(process)


@pytest.fixture(scope="module")
def pacs_http(
    orthanc: Orthanc, triton: LocalTriton, start_gateway: StartGateway
) -> Iterator[httpx.Client]:
    """A client of a gateway with default settings whose PACS is the module's Orthanc."""
    env = {
        "DICOMWEB_URL": orthanc.dicomweb,
        "DICOMWEB_USERNAME": USER,
        "DICOMWEB_PASSWORD": PASSWORD,
    }
    url, _ = start_gateway(triton.grpc_url, env)
    with httpx.Client(base_url=url, timeout=TIMEOUT_S) as client:
        yield client


def dicom_form(paths: list[Path]) -> dict[str, object]:
    """httpx arguments posting DICOM files as FLaVor's clients do: one ``files`` part and one
    ``images`` entry each, ``index`` in the order given."""
    images = [{"id": f"image-{k}", "file_name": p.name, "index": k} for k, p in enumerate(paths)]
    return {
        "files": [("files", (p.name, p.read_bytes(), "application/dicom")) for p in paths],
        "data": {"images": json.dumps(images)},
    }

"""Connections end when their client ends them: over real TCP, real clients, the real gateway.

hypercorn 0.18 kept a connection its client had closed open for the whole keep-alive timeout
(75 s): 2,000 one-request connections left 2,000 sockets in the gateway, and at a few hundred
new connections a second the process ran out of file descriptors. Over TLS, an idle connection
past the keep-alive timeout had its TLS stream closed but its socket left ESTABLISHED. The
diagnosis is in :mod:`gateway.server_protocol`'s docstring. Every test here but one failed before
that module: a TLS connection its client closed was already closed by asyncio's SSL layer,
which ends its transport when the peer does, and that test keeps it so.
"""

from __future__ import annotations

import collections
import json
import socket
import ssl
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import requests

from tests.e2e.conftest import GatewayProcess
from tests.factories import chest_png
from triton_local import LocalTriton

pytestmark = pytest.mark.e2e

CONNECTIONS = 2000
SETTLE_S = 2.0
"""How long after the last client closed the gateway's sockets are counted."""
MAX_CLOSE_WAIT = 5
MAX_EXTRA_FDS = 10
CLIENT_THREADS = 8
TLS_KEEP_ALIVE_S = 8.0
"""The TLS gateway's keep-alive timeout: seconds, not minutes, for the idle case; still well
above :data:`SETTLE_S`, so that it is not what closes the connections their clients closed."""

_TCP_STATES = {
    "01": "ESTABLISHED",
    "04": "FIN_WAIT1",
    "05": "FIN_WAIT2",
    "06": "TIME_WAIT",
    "08": "CLOSE_WAIT",
    "0A": "LISTEN",
}


class Served:
    """A gateway process whose sockets and file descriptors the test reads."""

    def __init__(self, process: GatewayProcess) -> None:
        self.process = process
        self.url = process.url
        self.port = int(process.url.rsplit(":", 1)[1])
        self.pid = process.process.pid
        self.verify: ssl.SSLContext | bool = process.verify

    def states(self) -> collections.Counter[str]:
        """TCP states of the gateway's end of its connections (local port = its port)."""
        counts: collections.Counter[str] = collections.Counter()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == self.port:
                    counts[_TCP_STATES.get(fields[3], fields[3])] += 1
        return counts

    def fds(self) -> int:
        return sum(1 for _ in Path(f"/proc/{self.pid}/fd").iterdir())

    def idle_fds(self) -> int:
        """Open descriptors with no connection in progress, after one request has warmed up
        whatever the first request opens (the CPU pool, the upload folder)."""
        with httpx.Client(base_url=self.url, verify=self.verify, timeout=30) as http:
            assert http.get("/health/live").status_code == 200
        time.sleep(SETTLE_S)
        return self.fds()

    def assert_released(self, idle: int, what: str) -> None:
        time.sleep(SETTLE_S)
        states, fds = self.states(), self.fds()
        assert states["CLOSE_WAIT"] <= MAX_CLOSE_WAIT, f"{what}: {dict(states)}"
        assert fds <= idle + MAX_EXTRA_FDS, f"{what}: {fds} descriptors open, {idle} when idle"


def start(folder: Path, triton: LocalTriton, env: Mapping[str, str]) -> Iterator[Served]:
    process = GatewayProcess(folder, triton.grpc_url, env)
    try:
        process.wait_until_ready()
        yield Served(process)
    finally:
        process.stop()
    assert process.process.returncode == 0, process.log_tail()


@pytest.fixture(scope="module")
def plain(triton: LocalTriton, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The default keep-alive timeout (75 s): what closes the sockets is not the timer."""
    yield from start(tmp_path_factory.mktemp("plain"), triton, {})


@pytest.fixture(scope="module")
def tls(
    triton: LocalTriton,
    tmp_path_factory: pytest.TempPathFactory,
    certificate: tuple[Path, Path],
) -> Iterator[Served]:
    cert, key = certificate
    env = {
        "TLS_CERT_FILE": str(cert),
        "TLS_KEY_FILE": str(key),
        "KEEP_ALIVE_TIMEOUT_S": str(TLS_KEEP_ALIVE_S),
    }
    yield from start(tmp_path_factory.mktemp("tls-gateway"), triton, env)


def each_once(count: int, connect: Callable[[int], int]) -> collections.Counter[int]:
    """``connect(i)`` on a new connection that it closes, ``count`` times; the statuses."""
    with ThreadPoolExecutor(CLIENT_THREADS) as pool:
        return collections.Counter(pool.map(connect, range(count)))


def test_connections_closed_by_their_clients_are_closed_at_once(plain: Served) -> None:
    idle = plain.idle_fds()

    def once(_: int) -> int:
        # requests.get opens a session of its own and closes it, connection and all.
        return requests.get(f"{plain.url}/health/live", timeout=30).status_code

    assert each_once(CONNECTIONS, once) == {200: CONNECTIONS}
    plain.assert_released(idle, f"{CONNECTIONS} connections closed by their clients")


def raw_exchange(served: Served, request: bytes) -> int:
    """Send ``request`` on a new socket, read the answer's status line, close."""
    with socket.create_connection(("127.0.0.1", served.port), timeout=30) as sock:
        sock.sendall(request)
        head = sock.recv(65536)
    return int(head[9:12])


def test_after_malformed_requests_and_early_refusals_too(plain: Served) -> None:
    """A malformed head (400), a refused body size (413), a body that is not a form (415) and
    a form for an unknown model (404, refused before its body is read, the connection kept
    alive and then closed by httpx)."""
    idle = plain.idle_fds()
    form = b"Content-Type: multipart/form-data; boundary=b\r\n"
    heads = [
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: many\r\n\r\n",
        b"POST /invocations HTTP/1.1\r\nHost: x\r\n"
        + form
        + b"Content-Length: 99999999999999\r\n\r\n",
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
    ]
    files = {"files": ("chest.png", chest_png(), "image/png")}

    def once(i: int) -> int:
        if i % 4 < len(heads):
            return raw_exchange(plain, heads[i % 4])
        with httpx.Client(base_url=plain.url, timeout=30) as http:
            return http.post("/models/no_such_model/invocations", files=files).status_code

    statuses = each_once(CONNECTIONS, once)
    assert set(statuses) == {400, 413, 415, 404}, statuses
    plain.assert_released(idle, "malformed requests and early refusals")


def test_tls_connections_closed_by_their_clients_are_closed_at_once(tls: Served) -> None:
    """The same over TLS; the keep-alive timeout (8 s) is well past the count at 2 s."""
    idle = tls.idle_fds()

    def once(_: int) -> int:
        with httpx.Client(base_url=tls.url, verify=tls.verify, timeout=30) as http:
            return http.get("/health/live").status_code

    assert each_once(CONNECTIONS, once) == {200: CONNECTIONS}
    tls.assert_released(idle, f"{CONNECTIONS} TLS connections closed by their clients")


def test_an_idle_tls_connection_past_the_keep_alive_timeout_loses_its_socket(tls: Served) -> None:
    """Clients that keep their connections but neither send nor read: the gateway's close_notify
    goes unanswered, and still its sockets close at the keep-alive timeout, not 30 s later."""
    idle = tls.idle_fds()
    assert isinstance(tls.verify, ssl.SSLContext)
    held = []
    try:
        for _ in range(20):
            raw = socket.create_connection(("127.0.0.1", tls.port), timeout=30)
            sock = tls.verify.wrap_socket(raw, server_hostname="127.0.0.1")
            sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
            held.append(sock)
        assert tls.fds() >= idle + len(held)
        time.sleep(TLS_KEEP_ALIVE_S)
        # Each connection's timer started at its own answer: allow for the last, on a busy host.
        deadline = time.monotonic() + 2 * SETTLE_S
        states, fds = tls.states(), tls.fds()
        while (fds > idle + MAX_EXTRA_FDS or states["ESTABLISHED"]) and time.monotonic() < deadline:
            time.sleep(0.2)
            states, fds = tls.states(), tls.fds()
        assert fds <= idle + MAX_EXTRA_FDS, f"{fds} descriptors open ({idle} idle): {states}"
        assert states["ESTABLISHED"] == 0, dict(states)
    finally:
        for sock in held:
            sock.close()


def test_the_tls_gateway_still_serves_a_model(tls: Served) -> None:
    files = {"files": ("chest.png", chest_png(), "image/png")}
    images = json.dumps([{"id": "image-0", "file_name": "chest.png", "index": 0}])
    with httpx.Client(base_url=tls.url, verify=tls.verify, timeout=300) as http:
        answer = http.post("/invocations", files=files, data={"images": images})
    assert answer.status_code == 200, answer.text

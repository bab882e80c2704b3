"""The gateway image: its Dockerfile, its build context (.dockerignore) and its health probe.

No Docker engine runs here, so the Dockerfile is read rather than built: a pinned slim base, two
stages, the gateway extras only, a fixed non-root user, a health check, the right command. The
.dockerignore rules are evaluated the way Docker evaluates them, and the probe script is run for
real against a local HTTP server.
"""

from __future__ import annotations

import http.server
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.dockerfile import DOCKERFILE, Instruction, read_dockerfile, stages

REPO = Path(__file__).resolve().parents[2]
DOCKERIGNORE = REPO / ".dockerignore"
PROBE = REPO / "docker" / "healthcheck.py"


def global_args(instructions: list[Instruction]) -> dict[str, str]:
    """ARGs declared before the first FROM, with their defaults: what FROM lines may use."""
    values: dict[str, str] = {}
    for keyword, arguments in instructions:
        if keyword == "FROM":
            break
        if keyword == "ARG" and "=" in arguments:
            name, _, default = arguments.partition("=")
            values[name] = default
    return values


def base_image(from_arguments: str, args: dict[str, str]) -> str:
    image = from_arguments.split()[0]
    return re.sub(r"\$\{?(\w+)\}?", lambda match: args[match.group(1)], image)


def exec_form(arguments: str) -> list[str]:
    assert arguments.startswith("["), f"use the exec (JSON) form: {arguments}"
    value = yaml.safe_load(arguments)
    assert isinstance(value, list) and all(isinstance(part, str) for part in value)
    return value


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return read_dockerfile()


@pytest.fixture(scope="module")
def runtime(instructions: list[Instruction]) -> list[Instruction]:
    return stages(instructions)[-1]


def last(stage: list[Instruction], keyword: str) -> str:
    values = [arguments for name, arguments in stage if name == keyword]
    assert values, f"the runtime stage has no {keyword}"
    return values[-1]


# ---- Dockerfile ----


def test_every_stage_starts_from_a_pinned_slim_python(instructions: list[Instruction]) -> None:
    args = global_args(instructions)
    images = [
        base_image(arguments, args) for keyword, arguments in instructions if keyword == "FROM"
    ]
    assert images
    for image in images:
        assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", image), image


def test_build_and_runtime_are_separate_stages(instructions: list[Instruction]) -> None:
    grouped = stages(instructions)
    assert len(grouped) >= 2
    build_name = grouped[0][0][1].split()[-1]
    copies = [arguments for keyword, arguments in grouped[-1] if keyword == "COPY"]
    assert any(f"--from={build_name} /opt/venv" in copy for copy in copies)
    assert not any(keyword == "RUN" and "pip" in arguments for keyword, arguments in grouped[-1])


def test_only_the_gateway_extras_are_installed(instructions: list[Instruction]) -> None:
    installs = [
        arguments for keyword, arguments in instructions if keyword == "RUN" and "pip" in arguments
    ]
    assert any('".[gateway]"' in install or " .[gateway]" in install for install in installs)
    joined = " ".join(installs)
    for unwanted in ("[dev]", "[local]", "onnxruntime", "torch", "pytriton", " -e "):
        assert unwanted not in joined, f"the gateway image must not install {unwanted}"


def test_pip_leaves_no_cache(instructions: list[Instruction]) -> None:
    environment = " ".join(arguments for keyword, arguments in instructions if keyword == "ENV")
    for keyword, arguments in instructions:
        if keyword == "RUN" and "pip install" in arguments:
            assert "--no-cache-dir" in arguments or "PIP_NO_CACHE_DIR=1" in environment


def test_runtime_runs_as_a_fixed_unprivileged_user(runtime: list[Instruction]) -> None:
    user = last(runtime, "USER")
    uid = user.partition(":")[0]
    assert uid.isdigit() and int(uid) >= 1000, f"USER must be a fixed numeric UID, got {user!r}"
    created = " ".join(arguments for keyword, arguments in runtime if keyword == "RUN")
    assert f"--uid {uid}" in created, "the runtime stage must create that user"


def test_runtime_environment(runtime: list[Instruction]) -> None:
    environment = " ".join(arguments for keyword, arguments in runtime if keyword == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in environment
    assert "PYTHONUNBUFFERED=1" in environment
    assert "/opt/venv/bin" in environment


def test_runtime_serves_the_gateway_on_9111(runtime: list[Instruction]) -> None:
    assert exec_form(last(runtime, "CMD")) == ["python", "-m", "gateway", "serve"]
    assert last(runtime, "EXPOSE").split() == ["9111"]


def test_the_command_exists() -> None:
    """`python -m gateway serve` is a real command of the package (asked for its help only)."""
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_runtime_has_a_healthcheck_with_the_shipped_probe(runtime: list[Instruction]) -> None:
    healthcheck = last(runtime, "HEALTHCHECK")
    options, _, command = healthcheck.partition(" CMD ")
    for option in ("--interval=", "--timeout=", "--start-period=", "--retries="):
        assert option in options
    argv = exec_form(command)
    assert argv[0] == "python" and argv[-1].startswith("/health/")
    copied = [arguments.split() for keyword, arguments in runtime if keyword == "COPY"]
    assert ["docker/healthcheck.py", argv[1]] in copied


def test_compose_uses_the_same_probe_and_port(runtime: list[Instruction]) -> None:
    compose = yaml.safe_load((REPO / "compose.yaml").read_text(encoding="utf-8"))
    gateway = compose["services"]["gateway"]
    assert gateway["build"]["dockerfile"] == DOCKERFILE.relative_to(REPO).as_posix()
    probe = exec_form(last(runtime, "HEALTHCHECK").partition(" CMD ")[2])
    assert gateway["healthcheck"]["test"][1:3] == probe[:2]
    assert str(gateway["environment"]["PORT"]) == last(runtime, "EXPOSE")


def hadolint() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"
    return str(beside_python) if beside_python.is_file() else shutil.which("hadolint")


@pytest.mark.skipif(hadolint() is None, reason="hadolint is not installed")
def test_hadolint_accepts_the_dockerfile() -> None:
    linter = hadolint()
    assert linter is not None
    result = subprocess.run(
        [linter, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ---- .dockerignore, evaluated like Docker does ----


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            out, index = out + "(?:.*/)?", index + 3
        elif pattern.startswith("**", index):
            out, index = out + ".*", index + 2
        elif pattern[index] == "*":
            out, index = out + "[^/]*", index + 1
        elif pattern[index] == "?":
            out, index = out + "[^/]", index + 1
        elif pattern[index] == "[":
            end = pattern.index("]", index)
            body = pattern[index + 1 : end]
            out += "[" + ("^" + body[1:] if body.startswith("!") else body) + "]"
            index = end + 1
        else:
            out, index = out + re.escape(pattern[index]), index + 1
    return re.compile(out)


def read_dockerignore() -> list[tuple[bool, re.Pattern[str]]]:
    rules: list[tuple[bool, re.Pattern[str]]] = []
    for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        pattern = line.removeprefix("!").strip().strip("/")
        rules.append((include, _pattern_regex(pattern)))
    return rules


def in_context(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: depth + 1]) for depth in range(len(parts))]
    sent = True
    for include, regex in rules:
        if any(regex.fullmatch(candidate) for candidate in candidates):
            sent = include
    return sent


@pytest.fixture(scope="module")
def rules() -> list[tuple[bool, re.Pattern[str]]]:
    return read_dockerignore()


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".venv-train/lib/python3.11/site-packages/torch/__init__.py",
        ".git/HEAD",
        ".mypy_cache/3.11/gateway/app.data.json",
        ".pytest_cache/v/cache/lastfailed",
        ".ruff_cache/content",
        ".hypothesis/examples/x",
        "model_repository/lesion_classifier/1/model.onnx",
        "training/runs/checkpoint.pt",
        "tests/compose/test_compose_file.py",
        "gateway/__pycache__/app.cpython-311.pyc",
        "aicoco/__pycache__/models.cpython-311.pyc",
        ".run/triton.log",
        "build/lib/gateway/app.py",
        "dist/aicoco_gateway-0.1.0-py3-none-any.whl",
        "aicoco_gateway.egg-info/PKG-INFO",
    ],
)
def test_dockerignore_keeps_out(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> None:
    assert not in_context(path, rules)


def test_dockerignore_sends_what_the_dockerfile_copies(
    instructions: list[Instruction], rules: list[tuple[bool, re.Pattern[str]]]
) -> None:
    sources: list[str] = []
    for keyword, arguments in instructions:
        if keyword == "COPY" and "--from=" not in arguments:
            sources.extend(shlex.split(arguments)[:-1])
    assert sources
    for source in sources:
        path = REPO / source
        assert path.exists(), f"COPY {source}: not in the repository"
        files = [path] if path.is_file() else [f for f in path.rglob("*.py") if f.is_file()]
        for file in files:
            relative = file.relative_to(REPO).as_posix()
            if "__pycache__" not in relative:
                assert in_context(relative, rules), f"{relative} is copied but ignored"


def test_packages_copied_are_the_packages_the_gateway_imports(
    instructions: list[Instruction],
) -> None:
    """Every first-party top-level package the gateway imports is copied into the build stage."""
    first_party = {"aicoco", "gateway", "triton_local", "training", "benchmarks"}
    copied: set[str] = set()
    for keyword, arguments in instructions:
        if keyword == "COPY" and "--from=" not in arguments:
            *sources, destination = (part.strip("/") for part in shlex.split(arguments))
            for package in first_party.intersection(sources):
                assert destination == package, f"COPY {package}: pip installs from ./{package}"
                copied.add(package)
    imported: set[str] = set()
    # Module-level imports only: a command that is not `serve` may import more, lazily.
    pattern = re.compile(r"^(?:from|import)\s+([A-Za-z_]\w*)", re.MULTILINE)
    for source in (REPO / "gateway").rglob("*.py"):
        imported.update(pattern.findall(source.read_text(encoding="utf-8")))
    missing = (imported & first_party) - copied
    assert not missing, f"the gateway imports {sorted(missing)}, which the image does not install"


# ---- the health probe ----


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status, body = {
            "/health/live": (200, b'{"status":"live"}'),
            "/health/ready": (503, b'{"code":"not_ready","message":"Triton is unavailable"}'),
        }.get(self.path, (404, b"{}"))
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def health_server() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def run_probe(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    # A proxy that does not exist: the probe must never send a loopback request through it.
    proxy = "http://127.0.0.1:9"
    environment = {"PORT": str(port), "HTTP_PROXY": proxy, "http_proxy": proxy}
    return subprocess.run(
        [sys.executable, str(PROBE), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=environment,
    )


def test_probe_passes_on_2xx(health_server: int) -> None:
    result = run_probe(health_server, "/health/live")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "HTTP 200" in result.stdout


def test_probe_defaults_to_liveness(health_server: int) -> None:
    assert run_probe(health_server).returncode == 0


def test_probe_fails_with_the_reason_on_an_error_status(health_server: int) -> None:
    result = run_probe(health_server, "/health/ready")
    assert result.returncode == 1
    assert "HTTP 503" in result.stdout
    assert "Triton is unavailable" in result.stdout


def test_probe_fails_when_nothing_listens() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free_port = sock.getsockname()[1]
    result = run_probe(free_port, "/health/live")
    assert result.returncode == 1
    assert f"127.0.0.1:{free_port}" in result.stdout

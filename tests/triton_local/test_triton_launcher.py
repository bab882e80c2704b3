"""The launcher's promises: Triton's reasons reach the caller, and nothing outlives it.

Leftover processes are found by reading /proc: every process of a local Triton (the server and
each backend stub) names the repository folder on its command line, and each test uses a folder
of its own.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.triton_local.tiny_models import AFFINE_CONFIG, model_folder
from triton_local import LocalTriton, ModelLoadError, TritonStartError
from triton_local.process import group_members

pytestmark = pytest.mark.e2e

StartTriton = Callable[..., LocalTriton]
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def local_triton(
    repository: Path, log_file: Path, *, require_all_models: bool = False
) -> LocalTriton:
    return LocalTriton(
        repository,
        grpc_port=0,
        http_port=0,
        metrics_port=0,
        log_file=log_file,
        require_all_models=require_all_models,
    )


def processes_mentioning(folder: Path) -> list[int]:
    """Live processes whose command line contains ``folder``."""
    needle = str(folder).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "cmdline").read_bytes() and not _zombie(entry):
                found.append(int(entry.name))
        except OSError:  # The process exited while we looked.
            continue
    return found


def _zombie(entry: Path) -> bool:
    stat = (entry / "stat").read_text()
    return stat[stat.rindex(")") + 2] in "ZX"


def wait_until_gone(folder: Path, timeout_s: float = 30.0) -> list[int]:
    """Wait for the processes naming ``folder`` to end; return those still alive at the deadline."""
    deadline = time.monotonic() + timeout_s
    while (alive := processes_mentioning(folder)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


@pytest.fixture
def repository(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "repository"
    model_folder(root, "affine", AFFINE_CONFIG)
    yield root
    # Whatever a test did, leave no process behind for the next one.
    for pid in processes_mentioning(root):
        os.kill(pid, signal.SIGKILL)


def stub_pids(pids: list[int]) -> list[int]:
    return [pid for pid in pids if b"triton_python_backend_stub" in _cmdline(pid)]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_stop_ends_the_server_and_its_stubs(repository: Path, tmp_path: Path) -> None:
    triton = local_triton(repository, tmp_path / "t.log")
    with triton:
        group = triton.process_group()
        assert triton.pid in group
        assert stub_pids(group), "the model's backend stub should run in the server's group"
        assert sorted(processes_mentioning(repository)) == sorted(group)
    assert not group_members(group[0])
    assert not processes_mentioning(repository)
    assert triton.log_path.read_text().count("successfully loaded 'affine'") == 1


def test_failed_model_load_is_reported_with_tritons_reason(
    repository: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model_folder(repository, "broken", AFFINE_CONFIG, onnx_file=None)

    with pytest.raises(TritonStartError) as caught:
        local_triton(repository, tmp_path / "t.log", require_all_models=True).start()
    assert "- broken: " in str(caught.value)
    assert "broken/1/model.onnx not found" in str(caught.value)
    assert not wait_until_gone(repository)

    caplog.set_level(logging.WARNING, logger="triton_local")
    with local_triton(repository, tmp_path / "t.log") as triton:
        assert "model.onnx not found" in triton.model_errors()["broken"]
        assert "affine" not in triton.model_errors()
        with pytest.raises(ModelLoadError, match=r"model 'broken' failed to load: .*not found"):
            triton.wait_for_model("broken")
        triton.wait_for_model("affine")
    assert "model 'broken' failed to load" in caplog.text


def test_server_that_cannot_start_is_reported_and_cleaned_up(
    repository: Path, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        triton = LocalTriton(
            repository, grpc_port=port, http_port=0, metrics_port=0, log_file=tmp_path / "t.log"
        )
        with pytest.raises(TritonStartError, match="already in use"):
            triton.start()
    assert triton.pid is None
    assert not wait_until_gone(repository)


def test_missing_repository_is_reported(tmp_path: Path) -> None:
    with pytest.raises(TritonStartError, match="is not a directory"):
        LocalTriton(tmp_path / "nowhere", grpc_port=0, http_port=0, metrics_port=0).start()


def test_a_killed_launcher_takes_the_server_with_it(repository: Path, tmp_path: Path) -> None:
    code = (
        "import sys, time\n"
        "from triton_local import LocalTriton\n"
        "t = LocalTriton(sys.argv[1], grpc_port=0, http_port=0, metrics_port=0).start()\n"
        "print(t.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    launcher = subprocess.Popen(
        [sys.executable, "-c", code, str(repository)],
        cwd=PROJECT_ROOT,
        # A killed launcher cannot remove its run folder: keep it in the test's temp folder.
        env={**os.environ, "TMPDIR": str(tmp_path)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert launcher.stdout is not None
    pgid = int(launcher.stdout.readline())
    assert stub_pids(group_members(pgid))

    launcher.kill()  # SIGKILL: no cleanup code of the launcher runs.
    launcher.wait()

    assert not wait_until_gone(repository)


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("started_ignoring_sigint", [False, True])
def test_cli_stops_cleanly_when_interrupted(
    repository: Path, tmp_path: Path, signum: signal.Signals, started_ignoring_sigint: bool
) -> None:
    """Also when started with SIGINT ignored, as a shell starts a background job (``make test
    &``): Python then installs no SIGINT handler of its own, and Ctrl-C's signal was lost."""
    cli = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "triton_local",
            f"--repository={repository}",
            "--grpc-port=0",
            "--http-port=0",
            "--metrics-port=0",
            f"--log-file={tmp_path / 'cli.log'}",
        ],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=_ignore_sigint if started_ignoring_sigint else None,
    )
    assert cli.stdout is not None
    ready = cli.stdout.readline()
    assert ready.startswith("Triton ready: grpc 127.0.0.1:"), ready
    assert processes_mentioning(repository)

    cli.send_signal(signum)

    assert cli.wait(timeout=120) == 0
    assert not processes_mentioning(repository)
    assert "successfully unloaded 'affine'" in (tmp_path / "cli.log").read_text()


def test_cli_can_insist_on_every_model(repository: Path, tmp_path: Path) -> None:
    model_folder(repository, "broken", AFFINE_CONFIG, onnx_file=None)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "triton_local",
            f"--repository={repository}",
            "--grpc-port=0",
            "--http-port=0",
            "--metrics-port=0",
            f"--log-file={tmp_path / 'cli.log'}",
            "--require-all-models",
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 1
    assert "broken/1/model.onnx not found" in done.stderr
    assert not processes_mentioning(repository)

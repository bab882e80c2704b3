"""``LocalTriton``: the wheel's ``tritonserver`` on a model repository, on CPU, without Docker.

How the server is run, and why:

- ``--model-control-mode=poll``: a model folder added to (or changed in, or removed from) the
  repository is loaded (reloaded, unloaded) within ``poll_interval_s`` without a restart or an
  API call, which is the "drop a folder in" workflow the product promises, and NVIDIA's image in
  compose does the same by itself. Explicit mode would need a load call from whoever adds the
  folder. The price: Triton retries a folder that failed to load at every poll.
- ``--exit-on-error=false`` and ``--strict-readiness=false``: a broken model folder must not
  stop the server nor make it report not-ready; each model's state stays in the repository
  index (``models()``) and Triton's reason in its log (``model_errors()``).
- ``--disable-auto-complete-config``: configs are strict, so what runs here is exactly what
  ``config.pbtxt`` says, as it will be on NVIDIA's image.
- ``--pinned-memory-pool-byte-size=0`` and no GPU metrics: there is no GPU to stage transfers
  for, and probing for one only adds warnings to the log.
- ``shm-default-byte-size`` / ``shm-growth-byte-size`` for the Python backend: every tensor
  crosses shared memory between server and stub; the 1 MiB default grows in 1 MiB steps, which
  is slow for 512 x 512 float batches.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import site
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from triton_local.backend_dir import BACKEND_NAME, build_backend_dir
from triton_local.errors import ModelLoadError, TritonStartError
from triton_local.install import TritonInstall, find_install
from triton_local.log_scan import LogScanner
from triton_local.process import group_members, kill_group, spawn, stop_group
from triton_local.server_api import READY, ModelStatus, repository_index, server_ready

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PYTHONPATH_ENV = "TRITON_LOCAL_PYTHONPATH"
DEFAULT_SHM_BYTES = 16 * 1024 * 1024
# A port picked as free can be taken by someone else before the server binds it.
PORT_ATTEMPTS = 3
LOG_TAIL_LINES = 20


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def stub_python_path() -> list[str]:
    """Where the backend stub must import from: this project, then this interpreter's packages."""
    entries = [str(PROJECT_ROOT), *site.getsitepackages()]
    return [entry for index, entry in enumerate(entries) if entry not in entries[:index]]


class LocalTriton:
    """Start, watch and stop a local Triton server; use it as a context manager.

    A port of 0 means "pick a free one" (the chosen port is then in ``grpc_url`` etc.). ``start``
    waits until the server answers and the initial load of every model has been tried; it raises
    ``TritonStartError`` with Triton's reason when the server cannot start, and, with
    ``require_all_models``, when a model failed to load. Otherwise a failed model is logged with
    Triton's reason and the server keeps serving the others.
    """

    def __init__(
        self,
        repository: str | os.PathLike[str],
        *,
        grpc_port: int = 8001,
        http_port: int = 8000,
        metrics_port: int = 8002,
        host: str = "127.0.0.1",
        log_file: str | os.PathLike[str] | None = None,
        poll_interval_s: int = 5,
        startup_timeout_s: float = 180.0,
        stop_timeout_s: float = 20.0,
        require_all_models: bool = False,
        shm_bytes: int = DEFAULT_SHM_BYTES,
    ) -> None:
        if poll_interval_s < 1:
            raise ValueError("poll_interval_s must be a whole number of seconds, at least 1")
        self.repository = Path(repository).resolve()
        self.host = host
        self.poll_interval_s = poll_interval_s
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.require_all_models = require_all_models
        self.shm_bytes = shm_bytes
        self._requested_ports = {"grpc": grpc_port, "http": http_port, "metrics": metrics_port}
        self._ports = dict(self._requested_ports)
        self._log_file = Path(log_file).resolve() if log_file is not None else None
        self._run_dir: Path | None = None
        self._log: IO[bytes] | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._scanner: LogScanner | None = None
        self._any_thread = False
        self._log_mode = "wb"
        self.startup_s: float | None = None

    @property
    def grpc_port(self) -> int:
        return self._ports["grpc"]

    @property
    def http_port(self) -> int:
        return self._ports["http"]

    @property
    def metrics_port(self) -> int:
        return self._ports["metrics"]

    @property
    def _client_host(self) -> str:
        return "127.0.0.1" if self.host in {"", "0.0.0.0"} else self.host

    @property
    def grpc_url(self) -> str:
        """``host:port`` as tritonclient's gRPC client takes it."""
        return f"{self._client_host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self._client_host}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self._client_host}:{self.metrics_port}/metrics"

    @property
    def log_path(self) -> Path:
        """Where Triton's log (server and backend stubs) is written."""
        if self._log_file is not None:
            return self._log_file
        if self._run_dir is None:
            raise RuntimeError("the log lives in the run folder, which exists only once started")
        return self._run_dir / "tritonserver.log"

    @property
    def pid(self) -> int | None:
        """The server's pid, which is also the process group id of the server and its stubs."""
        return self._process.pid if self._process is not None else None

    def process_group(self) -> list[int]:
        """Pids of the server and its backend stubs still alive."""
        return group_members(self._process.pid) if self._process is not None else []

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> Self:
        """Start the server and wait for it; on any failure nothing is left running."""
        if self._process is not None:
            raise RuntimeError("this LocalTriton is already running")
        install = find_install()
        if not self.repository.is_dir():
            raise TritonStartError(f"model repository {self.repository} is not a directory")
        try:
            self._run_dir = Path(tempfile.mkdtemp(prefix="triton-local-"))
            backend_dir = build_backend_dir(install, self._run_dir / "backends")
            for attempt in range(1, PORT_ATTEMPTS + 1):
                self._pick_ports()
                try:
                    self._launch(install, backend_dir)
                    break
                except TritonStartError as error:
                    if attempt == PORT_ATTEMPTS or not self._retry_on_port_clash(error):
                        raise
            self._report_models()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server and its stubs (SIGTERM, then SIGKILL after ``stop_timeout_s``)."""
        atexit.unregister(self.stop)
        process, self._process = self._process, None
        if process is not None:
            survivors = stop_group(process, timeout_s=self.stop_timeout_s)
            if survivors:
                logger.error("processes of the local Triton survived SIGKILL: %s", survivors)
        if self._log is not None:
            self._log.close()
            self._log = None
        self._scanner = None
        if self._run_dir is not None:
            if self._log_file is None:
                logger.debug("Triton's log was %s (removed with the run folder)", self.log_path)
            shutil.rmtree(self._run_dir, ignore_errors=True)
            self._run_dir = None

    def wait(self) -> int:
        """Block until the server exits on its own; return its exit status."""
        if self._process is None:
            raise RuntimeError("the server is not running")
        return self._process.wait()

    def reap(self) -> None:
        """After the server died on its own: kill its stubs at once, then clean up as
        :meth:`stop` does. Ports stay as they were, for :meth:`restart`."""
        process = self._process
        if process is not None:
            survivors = kill_group(process)
            if survivors:
                logger.error("processes of the local Triton survived SIGKILL: %s", survivors)
        self.stop()

    def restart(self, *, from_thread: bool = False) -> Self:
        """Start again on the same ports, so that clients configured with them reconnect.

        ``from_thread``: the caller is a thread that lives as long as the server (a
        supervisor), so the server may be bound to it and die with it.
        """
        if self._process is not None:
            raise RuntimeError("this LocalTriton is still running; stop or reap it first")
        self._requested_ports = dict(self._ports)
        self._any_thread = from_thread
        self._log_mode = "ab"  # the log of the run that died explains why: keep it
        return self.start()

    def models(self) -> list[ModelStatus]:
        """Triton's repository index: every model folder, its state and Triton's reason."""
        return repository_index(self.http_url)

    def model_errors(self) -> dict[str, str]:
        """Model folders that are not loaded because their last load failed, with Triton's reason.

        Covers failures the repository index does not show (a config that does not parse, no
        version folder), read from Triton's log.
        """
        if self._scanner is None:
            raise RuntimeError("the server is not running")
        failures = self._scanner.update()
        ready = {status.name for status in self.models() if status.state == READY}
        return {
            name: reason
            for name, reason in sorted(failures.items())
            if name not in ready and (self.repository / name).is_dir()
        }

    def wait_for_model(self, name: str, *, timeout_s: float = 60.0) -> None:
        """Wait until ``name`` is READY; raise ``ModelLoadError`` with Triton's reason if it fails.

        Only failures logged after the call count: in poll mode Triton retries a failed folder at
        every poll, so a folder that is still broken fails again within ``poll_interval_s``,
        while an earlier failure of a folder since fixed is not mistaken for the current state.
        """
        scanner = LogScanner(self.log_path, offset=self.log_path.stat().st_size)
        deadline = time.monotonic() + timeout_s
        while True:
            self._check_alive("while waiting for a model")
            statuses = [status for status in self.models() if status.name == name]
            if any(status.state == READY for status in statuses):
                return
            reason = scanner.update().get(name)
            if reason is not None:
                raise ModelLoadError(name, reason)
            if time.monotonic() > deadline:
                state = ", ".join(s.state or "unreadable" for s in statuses) or "not found"
                raise TritonStartError(
                    f"model {name!r} is not ready after {timeout_s:g} s (state: {state}); "
                    f"see {self.log_path}"
                )
            time.sleep(0.2)

    def _pick_ports(self) -> None:
        taken: set[int] = set()
        for key, requested in self._requested_ports.items():
            port = requested
            while port == 0 or port in taken:
                port = free_port(self._client_host)
            self._ports[key] = port
            taken.add(port)

    def _retry_on_port_clash(self, error: TritonStartError) -> bool:
        auto = any(port == 0 for port in self._requested_ports.values())
        return auto and "already in use" in str(error)

    def _command(self, install: TritonInstall, backend_dir: Path) -> list[str]:
        command = [
            str(install.binary),
            f"--model-repository={self.repository}",
            f"--backend-directory={backend_dir}",
            "--model-control-mode=poll",
            f"--repository-poll-secs={self.poll_interval_s}",
            "--disable-auto-complete-config",
            "--strict-readiness=false",
            "--exit-on-error=false",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            "--allow-metrics=true",
            "--allow-gpu-metrics=false",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            "--pinned-memory-pool-byte-size=0",
            f"--exit-timeout-secs={max(1, int(self.stop_timeout_s / 2))}",
            "--log-verbose=0",
        ]
        # The Python-based backend takes its settings under its own name, not "python".
        for backend in ("python", BACKEND_NAME):
            command += [
                f"--backend-config={backend},shm-default-byte-size={self.shm_bytes}",
                f"--backend-config={backend},shm-growth-byte-size={self.shm_bytes}",
            ]
        return command

    def _environment(self, install: TritonInstall) -> dict[str, str]:
        env = dict(os.environ)
        library_path = [str(install.library_dir), env.get("LD_LIBRARY_PATH", "")]
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in library_path if p)
        env[PYTHONPATH_ENV] = os.pathsep.join(stub_python_path())
        return env

    def _launch(self, install: TritonInstall, backend_dir: Path) -> None:
        if self._log is not None:
            self._log.close()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open(self._log_mode)
        self._scanner = LogScanner(self.log_path)
        assert self._run_dir is not None
        started = time.monotonic()
        self._process = spawn(
            self._command(install, backend_dir),
            env=self._environment(install),
            cwd=self._run_dir,
            log=self._log,
            any_thread=self._any_thread,
        )
        atexit.register(self.stop)
        deadline = started + self.startup_timeout_s
        while not server_ready(self.http_url):
            self._check_alive("before it was ready")
            if time.monotonic() > deadline:
                raise TritonStartError(
                    f"tritonserver was not ready after {self.startup_timeout_s:g} s: "
                    f"{self._log_tail()}"
                )
            time.sleep(0.1)
        self.startup_s = time.monotonic() - started

    def _check_alive(self, when: str) -> None:
        process = self._process
        if process is None:
            raise TritonStartError("the server is not running")
        code = process.poll()
        if code is not None:
            self._process = None
            stop_group(process, timeout_s=self.stop_timeout_s)
            raise TritonStartError(
                f"tritonserver exited with status {code} {when}: {self._log_tail()}"
            )

    def _log_tail(self) -> str:
        """Triton's error lines (or the last lines) of the log, to put in an exception."""
        if self._log is not None:
            self._log.flush()
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return f"no log at {self.log_path}"
        errors = [line for line in lines if line.startswith("E") or "error" in line.lower()]
        tail = (errors or lines)[-LOG_TAIL_LINES:]
        return "\n".join(tail) + f"\n(full log: {self.log_path})"

    def _report_models(self) -> None:
        failed = self.model_errors()
        ready = sorted({status.name for status in self.models() if status.state == READY})
        logger.info(
            "local Triton ready in %.1f s on grpc %s (http %s); models ready: %s",
            self.startup_s or 0.0,
            self.grpc_url,
            self.http_url,
            ", ".join(ready) or "none",
        )
        for name, reason in sorted(failed.items()):
            logger.warning("model %r failed to load: %s", name, reason)
        if failed and self.require_all_models:
            listed = "\n".join(f"- {name}: {reason}" for name, reason in sorted(failed.items()))
            raise TritonStartError(f"models failed to load:\n{listed}")

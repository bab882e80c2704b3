"""Configuration from environment variables, validated once at start.

A wrong value stops the gateway before it serves anything, with an error that names the variable,
rather than surfacing later as a confusing failure inside a request.

| Variable | Default | Meaning |
|---|---|---|
| `PORT` | `9111` | TCP port the gateway listens on. |
| `HOST` | `127.0.0.1` | Interface to bind; `0.0.0.0` exposes it to the network (images do). |
| `TRITON_URL` | `127.0.0.1:8001` | Triton's gRPC endpoint, `host:port` (no scheme). |
| `DEFAULT_MODEL` | `lesion_classifier` | Served by `POST /invocations`; readiness needs it. |
| `TRITON_TIMEOUT_S` | `60` | Seconds one Triton call may take (then 504). |
| `MAX_REQUEST_BYTES` | `2GiB` | Largest body: bytes, or with a KiB/MiB/GiB/KB/MB/GB suffix. |
| `MAX_FILES` | `4096` | Most file parts in one request (a CT series has hundreds). |
| `MAX_PIXELS_PER_IMAGE` | `100000000` | Most pixels in one frame: stops decompression bombs. |
| `MAX_TOTAL_VOXELS` | `1500000000` | Most pixels over all frames of one request. |
| `MAX_IN_FLIGHT` | `4` | Inference requests run at once; the others wait in the queue. |
| `MAX_QUEUE` | `64` | Requests waiting for an inference slot; past it, 503 `server_busy`. |
| `QUEUE_TIMEOUT_S` | `30` | Longest wait for a slot, then 503 `server_busy` with `Retry-After`. |
| `MAX_UPLOADS` | `64` | Request bodies received at once; past it, 503 `server_busy`. |
| `UPLOAD_IDLE_TIMEOUT_S` | `10` | Window in which an upload must progress, then 408. |
| `UPLOAD_MIN_RATE` | `16KiB` | Least body bytes per second over each window (slowloris guard). |
| `CPU_WORKERS` | CPU count | Threads for decoding, preprocessing and contours. |
| `PIPELINES` | empty | Custom pipelines: `model=package.module:Class,...`. |
| `LOG_LEVEL` | `INFO` | `DEBUG`, `INFO`, `WARNING`, `ERROR` or `CRITICAL`. |
| `LOG_FORMAT` | `json` | `json` (one object per line) or `text`. |
| `UPLOAD_DIR` | system temp | Uploads go to one folder per request here, always removed. |
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

T = TypeVar("T")

LogFormat = Literal["json", "text"]
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

_SIZE_UNITS = {
    "": 1,
    "B": 1,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "KIB": 1024,
    "MIB": 1024**2,
    "GIB": 1024**3,
}
_SIZE = re.compile(r"^\s*(\d[\d_]*)\s*([A-Za-z]*)\s*$")
_PIPELINE_TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


class SettingsError(ValueError):
    """A configuration value is missing or wrong; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    port: int = 9111
    host: str = "127.0.0.1"
    triton_url: str = "127.0.0.1:8001"
    default_model: str = "lesion_classifier"
    triton_timeout_s: float = 60.0
    max_request_bytes: int = 2 * 1024**3
    max_files: int = 4096
    max_pixels_per_image: int = 100_000_000
    max_total_voxels: int = 1_500_000_000
    max_in_flight: int = 4
    max_queue: int = 64
    queue_timeout_s: float = 30.0
    max_uploads: int = 64
    upload_idle_timeout_s: float = 10.0
    upload_min_rate: int = 16 * 1024
    cpu_workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    pipelines: dict[str, str] = field(default_factory=dict)
    log_level: str = "INFO"
    log_format: LogFormat = "json"
    upload_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """Read every variable of the table above; unset or empty means the default."""
        defaults = cls()

        def get(name: str, parse: Callable[[str, str], T], default: T) -> T:
            raw = environ.get(name, "").strip()
            return parse(name, raw) if raw else default

        return cls(
            port=get("PORT", _port, defaults.port),
            host=get("HOST", _text, defaults.host),
            triton_url=get("TRITON_URL", _triton_url, defaults.triton_url),
            default_model=get("DEFAULT_MODEL", _text, defaults.default_model),
            triton_timeout_s=get("TRITON_TIMEOUT_S", _positive_float, defaults.triton_timeout_s),
            max_request_bytes=get("MAX_REQUEST_BYTES", _byte_size, defaults.max_request_bytes),
            max_files=get("MAX_FILES", _positive_int, defaults.max_files),
            max_pixels_per_image=get(
                "MAX_PIXELS_PER_IMAGE", _positive_int, defaults.max_pixels_per_image
            ),
            max_total_voxels=get("MAX_TOTAL_VOXELS", _positive_int, defaults.max_total_voxels),
            max_in_flight=get("MAX_IN_FLIGHT", _positive_int, defaults.max_in_flight),
            max_queue=get("MAX_QUEUE", _non_negative_int, defaults.max_queue),
            queue_timeout_s=get("QUEUE_TIMEOUT_S", _positive_float, defaults.queue_timeout_s),
            max_uploads=get("MAX_UPLOADS", _positive_int, defaults.max_uploads),
            upload_idle_timeout_s=get(
                "UPLOAD_IDLE_TIMEOUT_S", _positive_float, defaults.upload_idle_timeout_s
            ),
            upload_min_rate=get("UPLOAD_MIN_RATE", _byte_size, defaults.upload_min_rate),
            cpu_workers=get("CPU_WORKERS", _positive_int, defaults.cpu_workers),
            pipelines=get("PIPELINES", _pipelines, defaults.pipelines),
            log_level=get("LOG_LEVEL", _log_level, defaults.log_level),
            log_format=get("LOG_FORMAT", _log_format, defaults.log_format),
            upload_dir=get("UPLOAD_DIR", _directory, defaults.upload_dir),
        )


def _text(name: str, raw: str) -> str:
    return raw


def _positive_int(name: str, raw: str) -> int:
    return _int_at_least(name, raw, 1, "a positive integer")


def _non_negative_int(name: str, raw: str) -> int:
    return _int_at_least(name, raw, 0, "an integer >= 0")


def _int_at_least(name: str, raw: str, minimum: int, what: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be {what}, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be {what}, got {raw!r}")
    return value


def _positive_float(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a positive number of seconds, got {raw!r}") from None
    if not value > 0 or value == float("inf"):
        raise SettingsError(f"{name} must be a positive number of seconds, got {raw!r}")
    return value


def _port(name: str, raw: str) -> int:
    value = _positive_int(name, raw)
    if value > 65535:
        raise SettingsError(f"{name} must be a TCP port between 1 and 65535, got {raw!r}")
    return value


def _byte_size(name: str, raw: str) -> int:
    match = _SIZE.match(raw)
    unit = match.group(2).upper() if match else ""
    if match is None or unit not in _SIZE_UNITS:
        raise SettingsError(
            f"{name} must be a number of bytes, optionally with a KiB, MiB, GiB, KB, MB or GB "
            f"suffix (e.g. 512MiB), got {raw!r}"
        )
    value = int(match.group(1)) * _SIZE_UNITS[unit]
    if value < 1:
        raise SettingsError(f"{name} must be at least 1 byte, got {raw!r}")
    return value


def _triton_url(name: str, raw: str) -> str:
    if "://" in raw:
        raise SettingsError(
            f"{name} is Triton's gRPC address as host:port, without a scheme, got {raw!r}"
        )
    host, sep, port = raw.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SettingsError(f"{name} must be host:port (e.g. 127.0.0.1:8001), got {raw!r}")
    return raw


def _pipelines(name: str, raw: str) -> dict[str, str]:
    pipelines: dict[str, str] = {}
    for entry in raw.split(","):
        if not entry.strip():
            continue
        model, sep, target = (part.strip() for part in entry.partition("="))
        if not sep or not model or not _PIPELINE_TARGET.match(target):
            raise SettingsError(
                f"{name} entries must look like model=package.module:Class, got {entry.strip()!r}"
            )
        if model in pipelines:
            raise SettingsError(f"{name} names model {model!r} twice")
        pipelines[model] = target
    return pipelines


def _log_level(name: str, raw: str) -> str:
    level = raw.upper()
    if level not in LOG_LEVELS:
        raise SettingsError(f"{name} must be one of {', '.join(LOG_LEVELS)}, got {raw!r}")
    return level


def _log_format(name: str, raw: str) -> LogFormat:
    value = raw.lower()
    if value == "json":
        return "json"
    if value == "text":
        return "text"
    raise SettingsError(f"{name} must be json or text, got {raw!r}")


def _directory(name: str, raw: str) -> Path:
    path = Path(raw).expanduser()
    if not path.is_dir():
        raise SettingsError(f"{name} must be an existing directory, got {raw!r}")
    if not os.access(path, os.W_OK | os.X_OK):
        raise SettingsError(f"{name} must be a directory the gateway can write to, got {raw!r}")
    return path

"""Configuration from environment variables, validated once at start.

A wrong value stops the gateway before it serves anything, with an error that names the variable,
rather than surfacing later as a confusing failure inside a request.

Each setting is declared once, as a field of :class:`Settings` made by :func:`setting`: its
variable (the field's name in capitals), parser, default and help. :meth:`Settings.from_env`
reads those declarations, and so does :func:`settings_markdown`, whose table
docs/configuration.md carries (a test keeps the two equal, and checks ``compose.yaml`` against
the defaults).
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, overload

from gateway.keys import ApiKey, parse_entries, repeated_ids

MAX_VOLUME_VOXELS = 134_217_728
"""``MAX_VOLUME_VOXELS``' default: 2**27, a 512**3 volume (a 300 x 512 x 512 CT on its own grid
fits); a three-channel model's blend of it holds 2 GiB."""

T = TypeVar("T")
Parser = Callable[[str, str], T]
"""``parse(variable, raw)``: the value, or SettingsError naming the variable."""

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
class Declaration:
    """What the environment variable of one setting means, beside its field's default."""

    variable: str
    parse: Parser[Any]
    shown: str
    """The default as the docs write it (``2GiB``, ``CPU count``)."""
    help: str


@overload
def setting(
    default: T, *, parse: Parser[T], help: str, shown: str | None = None, secret: bool = False
) -> T: ...


@overload
def setting(*, factory: Callable[[], T], parse: Parser[T], help: str, shown: str) -> T: ...


def setting(
    default: Any = None,
    *,
    parse: Parser[Any],
    help: str,
    shown: str | None = None,
    factory: Callable[[], Any] | None = None,
    secret: bool = False,
) -> Any:
    """A field of :class:`Settings`: its default (or ``factory``), parser and help, once.

    A ``secret`` (a password, a token) is left out of the settings' repr, so no log or
    traceback that prints them shows it.
    """
    if shown is None:
        shown = f"{default:g}" if isinstance(default, float) else str(default)
    metadata = {"setting": (parse, shown, help)}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata, repr=not secret)


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


def _database_url(name: str, raw: str) -> str:
    scheme, sep, rest = raw.partition("://")
    if not sep or scheme.lower() not in ("postgresql", "postgres") or not rest.strip("/"):
        raise SettingsError(
            f"{name} must be a PostgreSQL URL like postgresql://user:password@host:5432/db, "
            "or empty for the embedded store"
        )
    return raw


_HOST = re.compile(r"^[A-Za-z0-9.-]{1,253}(?::\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](?::\d{1,5})?$")


def _hosts(name: str, raw: str) -> tuple[str, ...]:
    hosts = tuple(host.strip().lower() for host in raw.split(",") if host.strip())
    for host in hosts:
        if not _HOST.match(host):
            raise SettingsError(
                f"{name}: {host!r} is not a host name or host:port (no scheme, no path)"
            )
    return hosts


def _positive_float(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a positive number of seconds, got {raw!r}") from None
    if not value > 0 or value == float("inf"):
        raise SettingsError(f"{name} must be a positive number of seconds, got {raw!r}")
    return value


def _boolean(name: str, raw: str) -> bool:
    value = raw.lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


def _http_url(name: str, raw: str) -> str:
    scheme, sep, rest = raw.partition("://")
    if not sep or scheme.lower() not in ("http", "https") or not rest.strip("/"):
        raise SettingsError(
            f"{name} must be an http:// or https:// URL (the DICOMweb root, e.g. "
            f"http://pacs:8042/dicom-web), got {raw!r}"
        )
    return raw.rstrip("/")


def _api_keys(name: str, raw: str) -> tuple[ApiKey, ...]:
    try:
        return parse_entries(raw, ",")
    except ValueError as exc:
        raise SettingsError(f"{name}: {exc}") from None


def _api_keys_file(name: str, raw: str) -> tuple[ApiKey, ...]:
    path = Path(raw).expanduser()
    try:
        text = path.read_text()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise SettingsError(f"{name} must be a readable file, got {raw!r} ({reason})") from None
    try:
        return parse_entries(text, None)
    except ValueError as exc:
        raise SettingsError(f"{name} ({raw}): {exc}") from None


def _existing_file(name: str, raw: str) -> Path:
    path = Path(raw).expanduser()
    if not path.is_file():
        raise SettingsError(f"{name} must be an existing file, got {raw!r}")
    return path


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
    for target in raw.split(","):
        target = target.strip()
        if "://" in target:
            raise SettingsError(
                f"{name} is Triton's gRPC address as host:port, without a scheme, got {target!r}"
            )
        host, sep, port = target.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise SettingsError(
                f"{name} must be host:port (e.g. 127.0.0.1:8001) or several, comma-separated, "
                f"got {target!r}"
            )
    return ",".join(target.strip() for target in raw.split(","))


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


def _folder(name: str, raw: str) -> Path:
    """A folder the gateway makes if it is missing (its parent must exist)."""
    path = Path(raw).expanduser()
    if not path.exists():
        if not path.parent.is_dir():
            raise SettingsError(f"{name}: the folder {path.parent} does not exist, got {raw!r}")
        return path
    return _directory(name, raw)


@dataclass(frozen=True)
class Settings:
    port: int = setting(9111, parse=_port, help="TCP port the gateway listens on.")
    host: str = setting(
        "127.0.0.1",
        parse=_text,
        help="Interface to bind; `0.0.0.0` exposes it to the network (images do).",
    )
    triton_url: str = setting(
        "127.0.0.1:8001",
        parse=_triton_url,
        help="Triton's gRPC endpoint, `host:port` (no scheme), or several, comma-separated. "
        "Each name's every address is a Triton (a headless Service): calls are balanced.",
    )
    triton_probe_s: float = setting(
        2.0,
        parse=_positive_float,
        help="How often each Triton is probed (readiness, loaded models) and names re-resolved; "
        "a Triton that fails a call is skipped at once, and rejoins when a probe finds it ready.",
    )
    default_model: str = setting(
        "lesion_classifier",
        parse=_text,
        help="Served by `POST /invocations`; readiness needs it.",
    )
    triton_timeout_s: float = setting(
        60.0, parse=_positive_float, help="Seconds one Triton call may take (then 504)."
    )
    max_request_bytes: int = setting(
        2 * 1024**3,
        parse=_byte_size,
        shown="2GiB",
        help="Largest body: bytes, or with a KiB/MiB/GiB/KB/MB/GB suffix.",
    )
    max_files: int = setting(
        4096,
        parse=_positive_int,
        help="Most file parts in one request (a CT series has hundreds).",
    )
    max_pixels_per_image: int = setting(
        100_000_000,
        parse=_positive_int,
        help="Most pixels in one frame: stops decompression bombs.",
    )
    max_total_voxels: int = setting(
        1_500_000_000, parse=_positive_int, help="Most pixels over all frames of one request."
    )
    max_volume_voxels: int = setting(
        MAX_VOLUME_VOXELS,
        parse=_positive_int,
        help=(
            "Most voxels of the volume a volumetric model works on (resampled, padded): its "
            "blend holds 4 bytes per voxel per output channel, plus one."
        ),
    )
    max_in_flight: int = setting(
        4,
        parse=_positive_int,
        help="Inference requests run at once; the others wait in the queue.",
    )
    max_queue: int = setting(
        64,
        parse=_non_negative_int,
        help="Requests waiting for an inference slot; past it, 503 `server_busy`.",
    )
    queue_timeout_s: float = setting(
        30.0,
        parse=_positive_float,
        help="Longest wait for a slot, then 503 `server_busy` with `Retry-After`.",
    )
    max_uploads: int = setting(
        64,
        parse=_positive_int,
        help="Request bodies received at once; past it, 503 `server_busy`.",
    )
    upload_idle_timeout_s: float = setting(
        10.0, parse=_positive_float, help="Window in which an upload must progress, then 408."
    )
    upload_min_rate: int = setting(
        16 * 1024,
        parse=_byte_size,
        shown="16KiB",
        help="Least body bytes per second over each window (slowloris guard).",
    )
    keep_alive_timeout_s: float = setting(
        75.0,
        parse=_positive_float,
        help="Seconds an idle keep-alive connection stays open. Keep it above the idle timeout "
        "of the clients and of any load balancer in front (httpx 5 s, AWS ALB 60 s), so that "
        "they, not the gateway, close idle connections. A connection its client closed is "
        "closed at once, whatever this is.",
    )
    workers: int = setting(
        1,
        parse=_positive_int,
        help="Gateway processes on the port, each with its own limits above; `/metrics` sums them.",
    )
    cpu_workers: int = setting(
        factory=lambda: os.cpu_count() or 1,
        parse=_positive_int,
        shown="CPU count",
        help="Threads for decoding, preprocessing and contours.",
    )
    pipelines: dict[str, str] = setting(
        factory=dict,
        parse=_pipelines,
        shown="empty",
        help="Custom pipelines: `model=package.module:Class,...`.",
    )
    log_level: str = setting(
        "INFO", parse=_log_level, help="`DEBUG`, `INFO`, `WARNING`, `ERROR` or `CRITICAL`."
    )
    log_format: LogFormat = setting(
        "json", parse=_log_format, help="`json` (one object per line) or `text`."
    )
    upload_dir: Path = setting(
        factory=lambda: Path(tempfile.gettempdir()),
        parse=_directory,
        shown="system temp",
        help="Uploads go to one folder per request here, always removed.",
    )
    max_table_bytes: int = setting(
        1024**3,
        parse=_byte_size,
        shown="1GiB",
        help="Largest table file (CSV or TSV) in a request.",
    )
    max_table_rows: int = setting(
        10_000_000, parse=_positive_int, help="Most data rows in one table."
    )
    max_table_columns: int = setting(
        4096, parse=_positive_int, help="Most columns in one table's header."
    )
    max_table_cell_chars: int = setting(
        4096, parse=_positive_int, help="Most characters in one table cell."
    )
    records_dir: Path = setting(
        factory=lambda: Path(tempfile.gettempdir()) / "aicoco-records",
        parse=_folder,
        shown="`aicoco-records` in system temp",
        help="Where tabular answers' records artifacts are written (made if missing); a volume "
        "shared by the replicas lets any of them serve any href.",
    )
    records_retention_s: float = setting(
        3600.0,
        parse=_positive_float,
        help="Records artifacts older than this are removed (their href then answers 404).",
    )
    records_max_bytes: int = setting(
        4 * 1024**3,
        parse=_byte_size,
        shown="4GiB",
        help="Most bytes of records artifacts kept; past it the oldest are removed first.",
    )
    jobs_dir: Path = setting(
        factory=lambda: Path(tempfile.gettempdir()) / "aicoco-jobs",
        parse=_folder,
        shown="`aicoco-jobs` in system temp",
        help="Jobs' inputs and results (made if missing), and the embedded store's SQLite file. "
        "Keep it across restarts (a volume); with several gateways, a volume they all mount.",
    )
    jobs_database_url: str = setting(
        "",
        parse=_database_url,
        shown="empty",
        secret=True,
        help="The jobs' shared store for several gateways, `postgresql://user:password@host/db`; "
        "empty keeps job state in SQLite under `JOBS_DIR` (one gateway). Never logged.",
    )
    job_workers: int = setting(
        2,
        parse=_positive_int,
        help="Jobs one gateway process runs at once, each in an inference slot taken in turn "
        "with the synchronous requests.",
    )
    job_max_queued: int = setting(
        1000,
        parse=_positive_int,
        help="Jobs waiting to run, over all gateways; past it a submission is 503 `server_busy`.",
    )
    job_retention_s: float = setting(
        86400.0,
        parse=_positive_float,
        help="A job is kept this long after it ends, its result with it; then 404 `job_not_found`.",
    )
    job_max_bytes: int = setting(
        4 * 1024**3,
        parse=_byte_size,
        shown="4GiB",
        help="Most bytes of job results kept; past it the jobs that ended first are removed.",
    )
    job_lease_s: float = setting(
        30.0,
        parse=_positive_float,
        help="A running job's gateway renews its claim this often (three times per lease); a "
        "claim not renewed (its gateway died) is queued again once, then failed.",
    )
    job_callback_hosts: tuple[str, ...] = setting(
        (),
        parse=_hosts,
        shown="empty",
        help="Hosts (`host` or `host:port`, comma-separated) a job's `callback` may name; empty "
        "allows none. Needs `JOB_CALLBACK_SECRET`.",
    )
    job_callback_secret: str = setting(
        "",
        parse=_text,
        shown="empty",
        secret=True,
        help="The key of the callbacks' HMAC-SHA256 signature (never logged).",
    )
    dicomweb_url: str = setting(
        "",
        parse=_http_url,
        shown="empty",
        help="The PACS's DICOMweb root (QIDO-RS, WADO-RS, STOW-RS); empty turns the DICOMweb "
        "routes off.",
    )
    dicomweb_username: str = setting(
        "", parse=_text, shown="empty", help="HTTP basic authentication to the PACS: the user."
    )
    dicomweb_password: str = setting(
        "", parse=_text, shown="empty", secret=True, help="... and its password (never logged)."
    )
    dicomweb_token: str = setting(
        "",
        parse=_text,
        shown="empty",
        secret=True,
        help="A bearer token for the PACS instead of basic authentication (never logged).",
    )
    dicomweb_timeout_s: float = setting(
        60.0,
        parse=_positive_float,
        help="Seconds the PACS may take to answer one call; a study streams for longer as long "
        "as bytes keep arriving.",
    )
    api_keys: tuple[ApiKey, ...] = setting(
        (),
        parse=_api_keys,
        shown="empty",
        help="API keys as `id:sha256:<hex>,...` (hashes only). With any key set, every route "
        "that takes or returns patient data needs one.",
    )
    api_keys_file: tuple[ApiKey, ...] = setting(
        (),
        parse=_api_keys_file,
        shown="empty",
        help="A file of such entries, one per line, added to `API_KEYS`.",
    )
    tls_cert_file: Path | None = setting(
        None,
        parse=_existing_file,
        shown="empty",
        help="PEM certificate (chain): the gateway serves HTTPS itself. Needs `TLS_KEY_FILE`.",
    )
    tls_key_file: Path | None = setting(
        None, parse=_existing_file, shown="empty", help="The certificate's PEM private key."
    )
    viewer: bool = setting(
        True,
        parse=_boolean,
        shown="true",
        help="Serve the browser viewer at `/viewer` and its render route; `false` removes both.",
    )

    def __post_init__(self) -> None:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise SettingsError("TLS_CERT_FILE and TLS_KEY_FILE go together: set both or neither")
        if repeated := repeated_ids(self.keys):
            raise SettingsError(
                f"API_KEYS and API_KEYS_FILE name the same key id twice: {', '.join(repeated)}"
            )
        if self.job_callback_hosts and not self.job_callback_secret:
            raise SettingsError(
                "JOB_CALLBACK_HOSTS needs JOB_CALLBACK_SECRET: callbacks are always signed"
            )

    @property
    def keys(self) -> tuple[ApiKey, ...]:
        """Every configured API key; empty means no key is asked for."""
        return self.api_keys + self.api_keys_file

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """Read every declared variable; unset or empty means the default."""
        values: dict[str, Any] = {}
        for name, declaration in _declared(cls):
            raw = environ.get(declaration.variable, "").strip()
            if raw:
                values[name] = declaration.parse(declaration.variable, raw)
        return cls(**values)


def declarations() -> list[Declaration]:
    """Every setting, in declaration order."""
    return [declaration for _, declaration in _declared(Settings)]


def _declared(cls: type[Settings]) -> Iterator[tuple[str, Declaration]]:
    for spec in dataclasses.fields(cls):
        parse, shown, help = spec.metadata["setting"]
        yield spec.name, Declaration(spec.name.upper(), parse, shown, help)


def settings_markdown() -> str:
    """The settings table of docs/configuration.md, from the declarations."""
    lines = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for declaration in declarations():
        shown = declaration.shown
        shown = shown if " " in shown or shown == "empty" else f"`{shown}`"
        lines.append(f"| `{declaration.variable}` | {shown} | {declaration.help} |")
    return "\n".join(lines) + "\n"

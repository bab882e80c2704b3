from __future__ import annotations

from pathlib import Path

import pytest

from gateway import doctables
from gateway.settings import (
    Declaration,
    Settings,
    SettingsError,
    declarations,
    settings_markdown,
)


def test_defaults_match_the_documented_table() -> None:
    settings = Settings.from_env({})
    assert settings.port == 9111
    assert settings.host == "127.0.0.1"
    assert settings.triton_url == "127.0.0.1:8001"
    assert settings.default_model == "lesion_classifier"
    assert settings.triton_timeout_s == 60
    assert settings.max_request_bytes == 2 * 1024**3
    assert settings.max_files == 4096
    assert settings.max_pixels_per_image == 100_000_000
    assert settings.max_total_voxels == 1_500_000_000
    assert settings.max_in_flight == 4
    assert settings.max_queue == 64
    assert settings.queue_timeout_s == 30
    assert settings.max_uploads == 64
    assert settings.upload_idle_timeout_s == 10
    assert settings.upload_min_rate == 16 * 1024
    assert settings.cpu_workers >= 1
    assert settings.pipelines == {}
    assert settings.log_level == "INFO"
    assert settings.log_format == "json"
    assert settings.upload_dir.is_dir()


def test_every_variable_is_read(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "PORT": "8080",
            "HOST": "0.0.0.0",
            "TRITON_URL": "triton:8001",
            "DEFAULT_MODEL": "lung_segmenter",
            "TRITON_TIMEOUT_S": "2.5",
            "MAX_REQUEST_BYTES": "512MiB",
            "MAX_FILES": "10",
            "MAX_PIXELS_PER_IMAGE": "1000",
            "MAX_TOTAL_VOXELS": "1_000_000",
            "MAX_IN_FLIGHT": "8",
            "MAX_QUEUE": "0",
            "QUEUE_TIMEOUT_S": "1.5",
            "MAX_UPLOADS": "5",
            "UPLOAD_IDLE_TIMEOUT_S": "3",
            "UPLOAD_MIN_RATE": "1KiB",
            "WORKERS": "2",
            "CPU_WORKERS": "3",
            "PIPELINES": "a=pkg.mod:A, b=pkg.other:B",
            "LOG_LEVEL": "debug",
            "LOG_FORMAT": "TEXT",
            "UPLOAD_DIR": str(tmp_path),
        }
    )
    assert settings == Settings(
        port=8080,
        host="0.0.0.0",
        triton_url="triton:8001",
        default_model="lung_segmenter",
        triton_timeout_s=2.5,
        max_request_bytes=512 * 1024**2,
        max_files=10,
        max_pixels_per_image=1000,
        max_total_voxels=1_000_000,
        max_in_flight=8,
        max_queue=0,
        queue_timeout_s=1.5,
        max_uploads=5,
        upload_idle_timeout_s=3,
        upload_min_rate=1024,
        workers=2,
        cpu_workers=3,
        pipelines={"a": "pkg.mod:A", "b": "pkg.other:B"},
        log_level="DEBUG",
        log_format="text",
        upload_dir=tmp_path,
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1024", 1024), ("2GiB", 2 * 1024**3), ("10 MB", 10_000_000), ("3kib", 3072)],
)
def test_byte_sizes(raw: str, expected: int) -> None:
    assert Settings.from_env({"MAX_REQUEST_BYTES": raw}).max_request_bytes == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("false", False), ("0", False), ("Off", False), ("TRUE", True), ("yes", True)],
)
def test_booleans(raw: str, expected: bool) -> None:
    assert Settings.from_env({"VIEWER": raw}).viewer is expected


def test_empty_values_mean_the_default() -> None:
    assert Settings.from_env({"PORT": "", "LOG_FORMAT": "  "}) == Settings.from_env({})


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("PORT", "http"),
        ("PORT", "70000"),
        ("PORT", "0"),
        ("TRITON_URL", "grpc://triton:8001"),
        ("TRITON_URL", "triton"),
        ("TRITON_URL", "triton:port"),
        ("TRITON_URL", "a:8001,b"),
        ("TRITON_PROBE_S", "0"),
        ("TRITON_TIMEOUT_S", "-1"),
        ("TRITON_TIMEOUT_S", "soon"),
        ("TRITON_TIMEOUT_S", "inf"),
        ("MAX_REQUEST_BYTES", "1.5GB"),
        ("MAX_REQUEST_BYTES", "12 parsecs"),
        ("MAX_REQUEST_BYTES", "0"),
        ("MAX_FILES", "-3"),
        ("MAX_PIXELS_PER_IMAGE", "many"),
        ("MAX_TOTAL_VOXELS", "1e9"),
        ("MAX_IN_FLIGHT", "0"),
        ("MAX_QUEUE", "-1"),
        ("QUEUE_TIMEOUT_S", "0"),
        ("MAX_UPLOADS", "none"),
        ("UPLOAD_IDLE_TIMEOUT_S", "soon"),
        ("UPLOAD_MIN_RATE", "fast"),
        ("CPU_WORKERS", "two"),
        ("PIPELINES", "model"),
        ("PIPELINES", "model=module_without_class"),
        ("PIPELINES", "a=x:A,a=y:B"),
        ("LOG_LEVEL", "chatty"),
        ("LOG_FORMAT", "xml"),
        ("UPLOAD_DIR", "/no/such/directory"),
        ("VIEWER", "maybe"),
        ("DICOMWEB_URL", "pacs:8042/dicom-web"),
        ("DICOMWEB_URL", "ftp://pacs/dicom-web"),
        ("DICOMWEB_TIMEOUT_S", "0"),
        ("MAX_TABLE_BYTES", "big"),
        ("MAX_TABLE_ROWS", "0"),
        ("MAX_TABLE_COLUMNS", "-1"),
        ("MAX_TABLE_CELL_CHARS", "1e3"),
        ("RECORDS_DIR", "/no/such/parent/records"),
        ("RECORDS_RETENTION_S", "0"),
        ("RECORDS_MAX_BYTES", "0"),
    ],
)
def test_a_wrong_value_names_its_variable(name: str, raw: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: raw})


def test_the_declarations_name_every_variable() -> None:
    variables = [
        "PORT",
        "HOST",
        "TRITON_URL",
        "TRITON_PROBE_S",
        "DEFAULT_MODEL",
        "TRITON_TIMEOUT_S",
        "MAX_REQUEST_BYTES",
        "MAX_FILES",
        "MAX_PIXELS_PER_IMAGE",
        "MAX_TOTAL_VOXELS",
        "MAX_VOLUME_VOXELS",
        "MAX_IN_FLIGHT",
        "MAX_QUEUE",
        "QUEUE_TIMEOUT_S",
        "MAX_UPLOADS",
        "UPLOAD_IDLE_TIMEOUT_S",
        "UPLOAD_MIN_RATE",
        "KEEP_ALIVE_TIMEOUT_S",
        "WORKERS",
        "CPU_WORKERS",
        "PIPELINES",
        "LOG_LEVEL",
        "LOG_FORMAT",
        "UPLOAD_DIR",
        "MAX_TABLE_BYTES",
        "MAX_TABLE_ROWS",
        "MAX_TABLE_COLUMNS",
        "MAX_TABLE_CELL_CHARS",
        "RECORDS_DIR",
        "RECORDS_RETENTION_S",
        "RECORDS_MAX_BYTES",
        "JOBS_DIR",
        "JOBS_DATABASE_URL",
        "JOB_WORKERS",
        "JOB_MAX_QUEUED",
        "JOB_RETENTION_S",
        "JOB_MAX_BYTES",
        "JOB_LEASE_S",
        "JOB_CALLBACK_HOSTS",
        "JOB_CALLBACK_SECRET",
        "DICOMWEB_URL",
        "DICOMWEB_USERNAME",
        "DICOMWEB_PASSWORD",
        "DICOMWEB_TOKEN",
        "DICOMWEB_TIMEOUT_S",
        "API_KEYS",
        "API_KEYS_FILE",
        "TLS_CERT_FILE",
        "TLS_KEY_FILE",
        "VIEWER",
    ]
    assert [declaration.variable for declaration in declarations()] == variables
    table = settings_markdown()
    for variable in variables:
        assert f"| `{variable}` |" in table
    assert table.count("\n| `") == len(variables)


DESCRIBED_IN_WORDS = {
    "CPU count",
    "empty",
    "system temp",
    "`aicoco-records` in system temp",
    "`aicoco-jobs` in system temp",
}


@pytest.mark.parametrize(
    "declaration",
    [d for d in declarations() if d.shown not in DESCRIBED_IN_WORDS],
    ids=lambda d: d.variable,
)
def test_the_documented_default_is_the_default(declaration: Declaration) -> None:
    """The table's default, read back through the variable's parser, is the field's default."""
    assert Settings.from_env({declaration.variable: declaration.shown}) == Settings()


def test_the_readme_table_is_the_generated_table() -> None:
    assert doctables.current("settings") == settings_markdown(), "run make docs"

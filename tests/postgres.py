"""A real PostgreSQL server for the tests of the jobs' shared store: Debian's ``postgresql``
package, a throw-away cluster on a free port, stopped and removed afterwards.

PostgreSQL refuses to run as root; as root (CI, this machine) the cluster belongs to the
package's ``postgres`` user, in a folder of its own under ``/tmp`` (pytest's folders are private
to root). Without the package, the tests that need it skip and say how to get it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.processes import terminate
from triton_local import free_port

START_TIMEOUT_S = 60.0


def binaries() -> Path | None:
    """The folder of ``initdb`` and ``postgres``: Debian keeps them off PATH, per version."""
    found = shutil.which("postgres")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    return versions[-1].parent if versions else None


def _owner() -> dict[str, Any]:
    """Popen's ``user``/``group`` for the cluster: the ``postgres`` user when run as root."""
    if os.geteuid() != 0:
        return {}
    try:
        account = pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("running as root without a 'postgres' user to own a PostgreSQL cluster")
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


@contextlib.contextmanager
def running_postgres() -> Iterator[str]:
    """A fresh cluster for a ``with`` block; yields its URL (user ``postgres``, trust auth on
    127.0.0.1 only)."""
    folder_bin = binaries()
    if folder_bin is None:
        pytest.skip(
            "PostgreSQL is not installed: `make test` installs Debian's postgresql package "
            "when it runs as root on Debian"
        )
    owner = _owner()
    # Under /tmp itself as root: the run's own temp folder is private to root.
    folder = Path(tempfile.mkdtemp(prefix="gateway-postgres-", dir="/tmp" if owner else None))
    if owner:
        os.chown(folder, owner["user"], owner["group"])
    data, log = folder / "data", folder / "postgres.log"
    port = free_port()
    process = None
    try:
        subprocess.run(
            [
                str(folder_bin / "initdb"),
                "-D",
                str(data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ],
            check=True,
            capture_output=True,
            **owner,
        )
        with log.open("wb") as out:
            process = subprocess.Popen(
                [
                    str(folder_bin / "postgres"),
                    "-D",
                    str(data),
                    "-p",
                    str(port),
                    "-k",
                    str(folder),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "fsync=off",
                    "-c",
                    "max_connections=200",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                **owner,
            )
        url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        _wait_ready(url, process, log)
        yield url
    finally:
        if process is not None:
            terminate(process)
        shutil.rmtree(folder, ignore_errors=True)


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    import psycopg

    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"PostgreSQL exited with {process.returncode}:\n{log.read_text()}")
        try:
            psycopg.connect(url, connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            time.sleep(0.2)
    pytest.fail(f"PostgreSQL was not ready after {START_TIMEOUT_S:g} s:\n{log.read_text()}")


def fresh_database(url: str) -> str:
    """A new, empty database on the server of ``url``: a test's own jobs table."""
    import secrets

    import psycopg

    name = "test_" + secrets.token_hex(6)
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return url.rsplit("/", 1)[0] + "/" + name

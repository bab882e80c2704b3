"""The command line: the console script is the module's command, and ``send`` lives apart from
the server (it must run where only the aicoco library is installed)."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

import gateway.__main__


def test_the_console_script_is_the_module_command() -> None:
    (script,) = metadata.entry_points(group="console_scripts", name="aicoco-gateway")
    assert script.load() is gateway.__main__.main


def test_send_imports_nothing_of_the_server() -> None:
    """Importing the command and ``send`` loads neither the web framework nor the Triton client."""
    probe = (
        "import sys, gateway.__main__, gateway.send; "
        "print(sorted(m for m in ('starlette', 'hypercorn', 'tritonclient', 'pydicom') "
        "if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"

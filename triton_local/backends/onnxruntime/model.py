"""Entry point Triton's Python backend stub loads for every ``backend: "onnxruntime"`` model.

The stub embeds the system's Python with an isolated configuration: it ignores ``PYTHONPATH``
and the virtual environment, so it would not find numpy, onnxruntime or this project. The
launcher passes the launching interpreter's package directories in ``TRITON_LOCAL_PYTHONPATH``;
they go first on ``sys.path`` so that these packages win over any system-wide copies. This must
happen before anything imports numpy, hence the late import below.
"""

import os
import sys

sys.path[:0] = [p for p in os.environ.get("TRITON_LOCAL_PYTHONPATH", "").split(os.pathsep) if p]

from triton_local.ort_backend import TritonPythonModel  # noqa: E402

__all__ = ["TritonPythonModel"]

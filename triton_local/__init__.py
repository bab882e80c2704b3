"""Local Triton: the ``tritonserver`` binary of the ``nvidia-pytriton`` wheel on CPU, with a
Python-based ``onnxruntime`` backend, so that ``model_repository/`` runs unchanged without Docker.

See README.md in this folder for how it works and how to drop models in.
"""

from triton_local.dropin import install_model
from triton_local.errors import ModelLoadError, TritonStartError
from triton_local.launcher import LocalTriton, free_port
from triton_local.server_api import ModelStatus
from triton_local.supervisor import TritonSupervisor

__all__ = [
    "LocalTriton",
    "ModelLoadError",
    "ModelStatus",
    "TritonStartError",
    "TritonSupervisor",
    "free_port",
    "install_model",
]

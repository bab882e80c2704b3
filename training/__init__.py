"""The example models of ``model_repository/``: phantom data, training, export, evaluation.

``python -m training`` retrains all five (PyTorch on CPU, in ``.venv-train``). Only ``nets``
and ``fit`` import torch; ``phantoms``, ``datasets``, ``metrics``, ``cards`` and ``evaluate``
need numpy, scipy and ONNX Runtime, so tests and benchmarks use them from the main environment.
"""

"""The example models of ``model_repository/``: phantom data, training, export, evaluation.

``python -m training`` retrains all ten (PyTorch on CPU, in ``.venv-train``). Only ``nets``,
``fit`` and ``table_fit`` import torch; ``phantoms``, ``datasets``, ``tables``, ``metrics``,
``cards``, ``table_cards`` and ``evaluate`` need numpy, scipy and ONNX Runtime (and
scikit-learn for its bundled tables), so tests and benchmarks use them from the main
environment.
"""

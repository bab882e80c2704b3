"""The example models of ``model_repository/``: phantom data, training, export, evaluation.

``python -m training`` retrains all eleven (PyTorch on CPU, in ``.venv-train``). Only ``nets``,
``fit``, ``table_fit`` and ``volume_fit`` import torch; ``phantoms``, ``datasets``, ``tables``,
``metrics``, ``cards``, ``table_cards``, ``volume_cards``, ``evaluate`` and ``volume_eval`` need
numpy, scipy and ONNX Runtime (and scikit-learn for its bundled tables; ``volume_eval`` the
gateway's own :mod:`gateway.volumes`, numpy only), so tests and benchmarks use them from the
main environment.
"""

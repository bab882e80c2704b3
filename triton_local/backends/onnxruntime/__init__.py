"""The ``onnxruntime`` Python-based backend: ``model.py`` is what Triton's Python stub loads."""

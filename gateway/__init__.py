"""The AiCOCO inference gateway: a Starlette service in front of Triton Inference Server.

``python -m gateway serve`` runs it; :func:`gateway.app.create_app` builds the ASGI app.
"""

from importlib import metadata

try:
    __version__ = metadata.version("aicoco-gateway")
except metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "unknown"

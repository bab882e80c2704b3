"""The AiCOCO inference gateway: a Starlette service in front of Triton Inference Server.

``python -m gateway serve`` runs it; :func:`gateway.app.create_app` builds the ASGI app.
"""

"""The PACS round trip over DICOMweb (PS3.18): fetch a study's series, run the model, store back.

- :mod:`gateway.dicomweb.client`: QIDO-RS, WADO-RS and STOW-RS calls, each bounded by
  ``DICOMWEB_TIMEOUT_S``, every failure one of the PACS errors (never a hang).
- :mod:`gateway.dicomweb.multipart`: ``multipart/related`` bodies, streamed to files and built.
- :mod:`gateway.routes.dicomweb`, with the other routes: ``POST /dicomweb/invocations`` and its
  per-model twin.
"""

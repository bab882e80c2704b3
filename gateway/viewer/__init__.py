"""The browser viewer: a page that runs a model and draws its AiCOCO answer on the images.

Everything the page needs ships in this package (no CDN, no build step): ``static/`` holds the
page, its script and its style sheet. The page calls only the service's ordinary routes:
``GET /models``, ``POST /models/{name}/invocations`` and ``POST /viewer/render``, which reads
the files under the same upload, queue and reading limits as an invocation. The viewer's routes
are :mod:`gateway.routes.viewer`; ``VIEWER=false`` removes all three.
"""

from __future__ import annotations

ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "viewer.js": "text/javascript; charset=utf-8",
    "viewer.css": "text/css; charset=utf-8",
}
"""The files of ``static/`` and their media types."""

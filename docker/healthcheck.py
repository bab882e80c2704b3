"""Container health probe for the gateway image: `python healthcheck.py [PATH]`.

The slim base image has no curl, so the probe is the standard library. It asks the gateway on the
loopback interface (port from `PORT`, as the gateway itself reads it) and exits 0 on a 2xx answer,
1 otherwise. What it prints ends up in `docker inspect`, so a failure says why: the status and the
start of the body (the gateway's readiness body names what is not ready), or the connection error.
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.error
import urllib.request

DEFAULT_PATH = "/health/live"
DEFAULT_PORT = "9111"
# Below Docker's own --timeout, so that the probe reports its reason instead of being killed.
TIMEOUT_S = 4.0
BODY_PREVIEW = 300


def probe_url(path: str, environ: dict[str, str]) -> str:
    port = environ.get("PORT", "").strip() or DEFAULT_PORT
    # With TLS_CERT_FILE the gateway serves HTTPS only, on the same port.
    scheme = "https" if environ.get("TLS_CERT_FILE", "").strip() else "http"
    return f"{scheme}://127.0.0.1:{port}{path if path.startswith('/') else '/' + path}"


def main(argv: list[str]) -> int:
    url = probe_url(argv[1] if len(argv) > 1 else DEFAULT_PATH, dict(os.environ))
    # No proxy: an HTTP(S)_PROXY set for the container must not capture a loopback probe. The
    # certificate names the service's public host, not 127.0.0.1: a loopback probe skips the
    # name and chain checks (it asks whether the process answers, not who it is).
    loopback = ssl.create_default_context()
    loopback.check_hostname = False
    loopback.verify_mode = ssl.CERT_NONE
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=loopback)
    )
    try:
        with opener.open(url, timeout=TIMEOUT_S) as response:
            print(f"{url}: HTTP {response.status}")
            return 0
    except urllib.error.HTTPError as error:
        body = error.read(BODY_PREVIEW).decode("utf-8", "replace")
        print(f"{url}: HTTP {error.code} {body}".rstrip())
    except (urllib.error.URLError, OSError) as error:
        print(f"{url}: {error}")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))

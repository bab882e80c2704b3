"""hypercorn's HTTP/1.1 protocol and TCP connection, adapted where hypercorn 0.18 offers no setting.

Both adaptations are subclasses installed once, by :func:`install`, into the module attributes
hypercorn looks its classes up in (``hypercorn.protocol.H11Protocol`` and
``hypercorn.asyncio.run.TCPServer``). They override private methods, which is why
``pyproject.toml`` pins hypercorn to 0.18; the tests of each behaviour (``tests/e2e/
test_connections.py``, ``tests/e2e/test_hostile_clients.py``) fail if an upgrade moves them.

**Parse errors answered in JSON.** A request that h11 cannot parse (a ``Content-Length`` that is
not a number, a broken request line) never reaches the app, and hypercorn answers it with an
empty 400. :class:`JSONErrorH11Protocol` answers in the gateway's error format instead, with the
code the app's own header checks use, and logs it: every answer is JSON and has an access line.

**Connections the client closed are closed at once** (:class:`ClosingTCPServer`). The
diagnosis, written to be filed upstream:

- *Reproduction.* Serve any ASGI app with hypercorn 0.18 (asyncio or uvloop worker, HTTP or
  HTTPS) and ``keep_alive_timeout = 75``. Open 500 connections, send one ``GET`` on each, read
  the answer, close. ``ss -tan`` shows the server's 500 sockets in ``CLOSE-WAIT`` (or, where the
  peer reset them, no longer listed but still open in ``/proc/PID/fd``) for 75 s.
- *Cause.* ``TCPServer.run`` reads inside ``async with TaskGroup``; the idle timer
  (``_idle_timeout``, a task of that group started when the connection goes idle) sleeps for
  the whole keep-alive timeout. When ``_read_data`` sees EOF it hands ``Closed()`` to the
  protocol, but an idle HTTP/1.1 connection has no stream, so ``H11Protocol.handle(Closed())``
  does nothing and never sends ``Closed`` back. The task group therefore waits for the timer
  before ``run`` reaches its ``finally: await self._close()``: the socket outlives its client
  by the keep-alive timeout. A few hundred new connections a second (health checks plus clients
  that do not pool) exhaust the process's file descriptors.
- *Fix.* When the read loop ends the connection is over: stop the idle timer there, and do not
  restart it afterwards (a response finishing after the EOF must not arm a new 75 s wait). The
  task group then ends as soon as any request in progress has seen its disconnect.

**An idle TLS connection is closed to the socket** (hypercorn issue 170). At the keep-alive
timeout hypercorn calls ``writer.close()``, which on an SSL transport sends ``close_notify``
and then waits for the peer's ``close_notify``; an idle client is not reading, so the TCP socket
stays ESTABLISHED until asyncio's SSL shutdown timeout (30 s), after which ``wait_closed`` raises
``TimeoutError: SSL shutdown timed out`` out of ``_close`` (hypercorn issue 202). RFC 8446
section 6.1 lets the side that closes skip waiting for the peer's ``close_notify``, so after
sending ours the transport is aborted at once; and a close that times out anyway ends in an
abort, not an exception.
"""

from __future__ import annotations

import json
import logging
from itertools import chain

import h11
import hypercorn.asyncio.run
import hypercorn.protocol
from hypercorn.asyncio.tcp_server import TCPServer
from hypercorn.events import Event, Updated
from hypercorn.protocol.h11 import H11Protocol

from gateway.errors import MalformedRequest

access_logger = logging.getLogger("gateway.access")


class JSONErrorH11Protocol(H11Protocol):
    """hypercorn's HTTP/1.1 protocol, with its parse-error answers in the gateway's format."""

    async def _send_error_response(self, status_code: int) -> None:
        error = MalformedRequest(
            "the request is not valid HTTP/1.1: a malformed request line or header, e.g. a "
            "Content-Length that is not a number; let an HTTP library build the request"
        )
        body = json.dumps(error.body(None)).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        await self._send_h11_event(
            h11.Response(
                status_code=status_code,
                headers=list(chain(headers, self.config.response_headers("h11"))),
            )
        )
        await self._send_h11_event(h11.Data(data=body))
        await self._send_h11_event(h11.EndOfMessage())
        access_logger.info(
            "unparsable request %s",
            status_code,
            extra={"status": status_code, "error_code": error.code, "route": "unparsed"},
        )


class ClosingTCPServer(TCPServer):
    """hypercorn's connection, closed as soon as the client has gone or the idle time is up."""

    _peer_gone = False

    async def _read_data(self) -> None:
        await super()._read_data()
        # EOF, a reset or a read error: nothing more can arrive, so nothing is kept alive.
        self._peer_gone = True
        await self.idle_task.stop()

    async def protocol_send(self, event: Event) -> None:
        if isinstance(event, Updated) and event.idle and self._peer_gone:
            return  # the answer to a request in progress ended after the EOF: close, not wait
        await super().protocol_send(event)

    async def _initiate_server_close(self) -> None:
        await super()._initiate_server_close()  # sends TLS close_notify, if any
        if self._is_tls():
            self.writer.transport.abort()

    async def _close(self) -> None:
        try:
            await super()._close()
        except TimeoutError:  # "SSL shutdown timed out": the peer never answered close_notify
            self.writer.transport.abort()

    def _is_tls(self) -> bool:
        return self.writer.get_extra_info("ssl_object") is not None


def install() -> None:
    """Put the adapted classes where hypercorn looks them up; call before serving."""
    setattr(hypercorn.protocol, "H11Protocol", JSONErrorH11Protocol)  # noqa: B010
    setattr(hypercorn.asyncio.run, "TCPServer", ClosingTCPServer)  # noqa: B010

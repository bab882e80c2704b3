"""A job's callback: its final status POSTed to a URL the submitter gave, signed, retried.

- **Only allowed hosts.** A callback makes the gateway send a request wherever a client says, so
  it could be turned against the hospital's own network (request forgery). The URL's host (and
  port, when the entry names one) must be in ``JOB_CALLBACK_HOSTS``, empty by default; anything
  else is refused at submission (422 ``callback_not_allowed``) and so never attempted. Checked
  again before each attempt, in case the operator has since removed the host. Redirects are not
  followed.
- **Signed.** As webhooks usually are: ``X-Gateway-Signature: sha256=<hex>``, the HMAC-SHA256
  under ``JOB_CALLBACK_SECRET`` of ``<X-Gateway-Timestamp>.<body>``. The receiver recomputes it
  over the raw body and checks the timestamp is recent, which also stops a replay.
- **Retried.** Up to :data:`ATTEMPTS` tries, :data:`FIRST_BACKOFF_S` doubling between them,
  until a 2xx. One at a time per gateway: a receiver that hangs holds the others back for at
  most :data:`TIMEOUT_S`. The due time is in the job's row and each attempt is taken from the
  store (:meth:`~gateway.jobs.store.JobStore.take_callback`), so a callback survives a restart
  and one gateway, not all, sends it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from urllib.parse import urlsplit

import httpx

from gateway.errors import ApiError, CallbackNotAllowed
from gateway.jobs.status import status_of
from gateway.jobs.store import CallbackState, Job, JobStore
from gateway.jobs.wakeup import nap
from gateway.settings import Settings

logger = logging.getLogger("gateway.jobs")

ATTEMPTS = 5
FIRST_BACKOFF_S = 2.0
TIMEOUT_S = 10.0
POLL_S = 1.0
"""How often the store is asked for a callback that is due (a retry, another gateway's job)."""
HOLD_S = 60.0
"""How long an attempt holds a callback from the other gateways: longer than the timeout."""
SIGNATURE_HEADER = "X-Gateway-Signature"
TIMESTAMP_HEADER = "X-Gateway-Timestamp"
JOB_HEADER = "X-Gateway-Job"
MAX_URL_CHARS = 2048


def checked_callback(url: str, settings: Settings) -> str:
    """``url`` if a callback may be sent there; else 422 ``callback_not_allowed``."""
    if len(url) > MAX_URL_CHARS:
        raise CallbackNotAllowed(f"the callback URL is longer than {MAX_URL_CHARS} characters")
    if not settings.job_callback_hosts:
        raise CallbackNotAllowed(
            "callbacks are off on this gateway (JOB_CALLBACK_HOSTS is empty); poll "
            "GET /jobs/{id} instead",
            details={"callback": url},
        )
    host = allowed_host(url, settings.job_callback_hosts)
    if host is None:
        raise CallbackNotAllowed(
            "the callback must be an http or https URL on a host of JOB_CALLBACK_HOSTS "
            f"({', '.join(settings.job_callback_hosts)})",
            details={"callback": url},
        )
    return url


def allowed_host(url: str, hosts: tuple[str, ...]) -> str | None:
    """The entry of ``hosts`` that allows ``url``: its host, or its host and port."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username:
        return None
    host = parts.hostname.lower()
    shown = f"[{host}]" if ":" in host else host
    for entry in hosts:
        if entry == shown or (port is not None and entry == f"{shown}:{port}"):
            return entry
    return None


def signature(secret: str, timestamp: str, body: bytes) -> str:
    message = timestamp.encode("ascii") + b"." + body
    return "sha256=" + hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


class CallbackSender:
    """Sends the callbacks that are due, from any gateway's jobs; :meth:`wake` when one ends
    here so that it goes at once rather than at the next poll."""

    def __init__(self, store: JobStore, settings: Settings) -> None:
        self._store = store
        self._settings = settings
        self._due = asyncio.Event()

    def wake(self) -> None:
        self._due.set()

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=TIMEOUT_S, follow_redirects=False) as client:
            while True:
                try:
                    job = await self._store.take_callback(HOLD_S)
                    if job is not None:
                        await self._attempt(client, job)
                        continue
                except ApiError as exc:  # the store is down: the next poll tries again
                    logger.warning("callbacks: %s", exc.message)
                self._due.clear()
                await nap(self._due, POLL_S)

    async def _attempt(self, client: httpx.AsyncClient, job: Job) -> None:
        assert job.callback is not None
        attempts = job.callback_attempts + 1
        delivered = False
        if allowed_host(job.callback, self._settings.job_callback_hosts) is None:
            logger.warning(
                "job %s: callback host no longer in JOB_CALLBACK_HOSTS; not sent", job.id
            )
            await self._store.callback_tried(
                job.id, CallbackState.FAILED, job.callback_attempts, None
            )
            return
        body = status_of(job).model_dump_json().encode("utf-8")
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            JOB_HEADER: job.id,
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: signature(self._settings.job_callback_secret, timestamp, body),
        }
        try:
            response = await client.post(job.callback, content=body, headers=headers)
            delivered = response.is_success
            outcome = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            outcome = f"{type(exc).__name__}: {exc}"
        if delivered:
            logger.info("job %s: callback delivered (attempt %d)", job.id, attempts)
            await self._store.callback_tried(job.id, CallbackState.DELIVERED, attempts, None)
        elif attempts >= ATTEMPTS:
            logger.warning(
                "job %s: callback failed %d times, the last %s; given up", job.id, attempts, outcome
            )
            await self._store.callback_tried(job.id, CallbackState.FAILED, attempts, None)
        else:
            backoff = FIRST_BACKOFF_S * 2 ** (attempts - 1)
            logger.info(
                "job %s: callback attempt %d: %s; next in %g s", job.id, attempts, outcome, backoff
            )
            await self._store.callback_tried(
                job.id, CallbackState.PENDING, attempts, time.time() + backoff
            )

"""Several Tritons behind one gateway: one gRPC channel each, chosen per call.

Why the gateway balances itself: gRPC keeps one long-lived HTTP/2 connection, so behind an
ordinary Kubernetes Service a gateway talks to whichever Triton pod it first reached, for ever.
:class:`TritonPool` holds one channel per Triton (each address a headless Service's name
resolves to, or each ``host:port`` of ``TRITON_URL``) and, per call:

- picks the next Triton, round robin, among those that are up and have the model ready (a model
  loaded on only some replicas goes only to those);
- marks a Triton down at the first connection failure and sends the call to the next one
  (inference has no side effects, so a retry is safe), so that a killed Triton costs only the
  calls that were on it when it died, and then nothing;
- probes every Triton every ``TRITON_PROBE_S`` (readiness and the repository index), re-resolving
  names, so that a restarted or new Triton takes traffic again without a gateway restart.

It answers the calls :class:`~gateway.triton.TritonClient` makes of one Triton (its ``grpc``
seam), so caching, batching and error mapping stay there: the server is ready when any Triton
is, a model when it is ready on any, and the repository index is the union of theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import tritonclient.grpc.aio as grpcaio
from tritonclient.utils import InferenceServerException

from gateway.errors import TritonUnavailable
from gateway.triton.client import GrpcClient
from gateway.triton.errors import map_triton_error

logger = logging.getLogger("gateway.triton")

T = TypeVar("T")
PROBE_TIMEOUT_S = 2.0
Resolver = Callable[[str, int], Awaitable[list[str]]]
"""``await resolve(host, port)``: the IP addresses of a name (a headless Service's pods)."""


@dataclass
class _Member:
    address: str
    client: GrpcClient
    up: bool = True
    """Optimistic until the first probe or call says otherwise."""
    models: frozenset[str] = frozenset()
    """The models its last probe found READY; none until its first probe."""

    def serves(self, model: str | None) -> bool:
        return self.up and (model is None or model in self.models)


async def resolve_addresses(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return sorted({str(info[4][0]) for info in infos})


class TritonPool:
    def __init__(
        self,
        targets: Sequence[str],
        *,
        probe_s: float,
        client: Callable[[str], GrpcClient] = grpcaio.InferenceServerClient,
        resolve: Resolver = resolve_addresses,
    ) -> None:
        if not targets:
            raise ValueError("a Triton pool needs at least one target")
        self.targets = list(targets)
        self.probe_s = probe_s
        self._make = client
        self._resolve = resolve
        self._members: dict[str, _Member] = {}
        # One turn per model: with a shared one, two models called alternately would each land
        # on the same Triton every time.
        self._turns: dict[str | None, itertools.count[int]] = {}
        self._task: asyncio.Task[None] | None = None

    @property
    def members(self) -> list[_Member]:
        return list(self._members.values())

    async def start(self) -> None:
        """Resolve and probe once, then keep probing in the background."""
        await self.refresh()
        self._task = asyncio.create_task(self._probe_forever(), name="triton-pool-probe")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.gather(*(m.client.close() for m in self.members), return_exceptions=True)

    async def refresh(self) -> None:
        """Follow the names' addresses, then probe every Triton."""
        wanted: list[str] = []
        for target in self.targets:
            host, _, port = target.rpartition(":")
            try:
                addresses = await self._resolve(host.strip("[]"), int(port))
            except OSError as exc:
                # Not resolvable yet (compose starting, a Service without pods): gRPC's own
                # resolver keeps trying the name, and the next probe looks again.
                logger.warning("cannot resolve Triton target %s: %s", target, exc)
                wanted.append(target)
                continue
            for address in addresses:
                shown = f"[{address}]" if ":" in address else address
                wanted.append(f"{shown}:{port}")
        for address in wanted:
            if address not in self._members:
                logger.info("Triton %s joins the pool", address)
                self._members[address] = _Member(address, self._make(address))
        for address in [a for a in self._members if a not in wanted]:
            logger.info("Triton %s leaves the pool", address)
            await self._members.pop(address).client.close()
        await asyncio.gather(*(self._probe(m) for m in self.members))

    async def _probe_forever(self) -> None:
        while True:
            await asyncio.sleep(self.probe_s)
            try:
                await self.refresh()
            except Exception:  # the probe must outlive any one failure
                logger.exception("probing the Tritons failed")

    async def _probe(self, member: _Member) -> None:
        was = member.up
        try:
            ready = bool(await member.client.is_server_ready(client_timeout=PROBE_TIMEOUT_S))
            index = await member.client.get_model_repository_index(
                as_json=True, client_timeout=PROBE_TIMEOUT_S
            )
        except InferenceServerException:
            ready, index = False, {}
        member.up = ready
        member.models = frozenset(
            str(entry.get("name", ""))
            for entry in index.get("models", [])
            if entry.get("state") == "READY"
        )
        if member.up != was:
            logger.warning("Triton %s is %s", member.address, "up" if member.up else "down")

    def _candidates(self, model: str | None) -> list[_Member]:
        """The Tritons to try in order: those up with the model ready, from the next in turn;
        when none is known to serve it, all of them, so that an answer (or Triton's own error)
        comes back."""
        members = [m for m in self.members if m.serves(model)] or self.members
        start = next(self._turns.setdefault(model, itertools.count())) % len(members)
        return members[start:] + members[:start]

    async def _call(self, model: str | None, call: Callable[[GrpcClient], Awaitable[T]]) -> T:
        failure: InferenceServerException | None = None
        for member in self._candidates(model):
            try:
                return await call(member.client)
            except InferenceServerException as exc:
                if not isinstance(map_triton_error(exc, None), TritonUnavailable):
                    raise
                if member.up:
                    logger.warning("Triton %s is down: %s", member.address, exc.message())
                member.up = False
                failure = exc
        assert failure is not None
        raise failure

    async def _all(self, call: Callable[[GrpcClient], Awaitable[T]]) -> list[T]:
        """The call on every Triton that is up (or on all, when none is), the answers of those
        that answer; raises when none does."""
        members = [m for m in self.members if m.up] or self.members
        results = await asyncio.gather(*(call(m.client) for m in members), return_exceptions=True)
        answered = [r for r in results if not isinstance(r, BaseException)]
        if not answered:
            failure = next(r for r in results if isinstance(r, BaseException))
            raise failure
        return answered

    # What TritonClient calls (tritonclient.grpc.aio.InferenceServerClient's methods).

    async def is_server_live(self, **kwargs: Any) -> bool:
        return any(await self._all(lambda c: c.is_server_live(**kwargs)))

    async def is_server_ready(self, **kwargs: Any) -> bool:
        return any(await self._all(lambda c: c.is_server_ready(**kwargs)))

    async def is_model_ready(self, model_name: str, **kwargs: Any) -> bool:
        return any(await self._all(lambda c: c.is_model_ready(model_name, **kwargs)))

    async def get_model_repository_index(self, **kwargs: Any) -> dict[str, Any]:
        merged: dict[tuple[str, str], dict[str, Any]] = {}
        for index in await self._all(lambda c: c.get_model_repository_index(**kwargs)):
            for entry in index.get("models", []):
                key = (str(entry.get("name", "")), str(entry.get("version", "")))
                if key not in merged or entry.get("state") == "READY":
                    merged[key] = entry
        return {"models": list(merged.values())}

    async def get_model_metadata(self, model_name: str, **kwargs: Any) -> Any:
        return await self._call(model_name, lambda c: c.get_model_metadata(model_name, **kwargs))

    async def get_model_config(self, model_name: str, **kwargs: Any) -> Any:
        return await self._call(model_name, lambda c: c.get_model_config(model_name, **kwargs))

    async def infer(self, model_name: str, inputs: list[Any], **kwargs: Any) -> Any:
        return await self._call(model_name, lambda c: c.infer(model_name, inputs, **kwargs))

"""The pool's choices with stub Tritons: round robin, a model only where it is loaded, skipping
one that refuses connections, taking it back after a probe (two real Tritons: tests/e2e)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from tritonclient.utils import InferenceServerException

from gateway.triton import TritonPool

pytestmark = pytest.mark.anyio


@dataclass
class Stub:
    models: set[str]
    down: bool = False
    calls: list[str] = field(default_factory=list)

    def _check(self) -> None:
        if self.down:
            raise InferenceServerException(
                "failed to connect to all addresses", "StatusCode.UNAVAILABLE"
            )

    async def is_server_live(self, **kwargs: Any) -> bool:
        self._check()
        return True

    async def is_server_ready(self, **kwargs: Any) -> bool:
        self._check()
        return True

    async def is_model_ready(self, model_name: str, **kwargs: Any) -> bool:
        self._check()
        return model_name in self.models

    async def get_model_repository_index(self, **kwargs: Any) -> dict[str, Any]:
        self._check()
        return {"models": [{"name": m, "version": "1", "state": "READY"} for m in self.models]}

    async def get_model_metadata(self, model_name: str, **kwargs: Any) -> Any:
        self._check()
        return {"name": model_name}

    async def get_model_config(self, model_name: str, **kwargs: Any) -> Any:
        self._check()
        return {"config": {}}

    async def infer(self, model_name: str, inputs: list[Any], **kwargs: Any) -> Any:
        self._check()
        if model_name not in self.models:
            raise InferenceServerException("unknown model", "StatusCode.NOT_FOUND")
        self.calls.append(model_name)
        return model_name

    async def close(self) -> None:
        pass


async def pool_of(stubs: dict[str, Stub]) -> TritonPool:
    async def resolve(host: str, port: int) -> list[str]:
        return [host]

    pool = TritonPool(
        [f"{name}:8001" for name in stubs],
        probe_s=3600,
        client=lambda address: stubs[address.split(":")[0]],
        resolve=resolve,
    )
    await pool.refresh()
    return pool


async def test_round_robin_and_models_only_where_loaded() -> None:
    a, b = Stub({"cls"}), Stub({"cls", "seg"})
    pool = await pool_of({"a": a, "b": b})
    for _ in range(10):
        await pool.infer("cls", [])
        await pool.infer("seg", [])
    assert len(a.calls) == 5 and b.calls.count("cls") == 5 and b.calls.count("seg") == 10
    assert await pool.is_model_ready("seg")
    index = await pool.get_model_repository_index()
    assert sorted(m["name"] for m in index["models"]) == ["cls", "seg"]


async def test_a_refusing_triton_is_skipped_then_taken_back() -> None:
    a, b = Stub({"cls"}), Stub({"cls"})
    pool = await pool_of({"a": a, "b": b})
    a.down = True
    for _ in range(6):
        assert await pool.infer("cls", []) == "cls"
    assert len(b.calls) == 6 and a.calls == []
    assert await pool.is_server_ready()
    a.down = False
    await pool.refresh()
    for _ in range(6):
        await pool.infer("cls", [])
    assert len(a.calls) == 3
    a.down = b.down = True
    with pytest.raises(InferenceServerException, match="failed to connect"):
        await pool.infer("cls", [])
    with pytest.raises(InferenceServerException):
        await pool.is_server_ready()
    await pool.close()


async def test_a_model_on_two_of_three_is_shared_evenly() -> None:
    stubs = {"a": Stub({"seg"}), "b": Stub({"cls"}), "c": Stub({"seg"})}
    pool = await pool_of(stubs)
    for _ in range(10):
        await pool.infer("seg", [])
    assert (len(stubs["a"].calls), len(stubs["b"].calls), len(stubs["c"].calls)) == (5, 0, 5)


async def test_other_errors_are_not_retried() -> None:
    a, b = Stub({"cls"}), Stub({"cls"})
    pool = await pool_of({"a": a, "b": b})
    with pytest.raises(InferenceServerException, match="unknown model"):
        # Not loaded anywhere: tried on one Triton, whose own error comes back.
        await pool.infer("missing", [])
    assert all(m.up for m in pool.members)

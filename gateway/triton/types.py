"""What a model declares: its tensors, its configuration and its state, as Triton reports them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tritonclient.utils import triton_to_np_dtype


@dataclass(frozen=True)
class TensorSpec:
    """One input or output as Triton declares it; ``shape`` excludes the batch dimension."""

    name: str
    datatype: str
    """Triton's name for the dtype: ``FP32``, ``UINT8``, ``BYTES``..."""
    shape: tuple[int, ...]
    """-1 where any size is allowed."""
    optional: bool = False

    @property
    def dtype(self) -> np.dtype[Any]:
        dtype: np.dtype[Any] = np.dtype(triton_to_np_dtype(self.datatype))
        return dtype

    def describe(self) -> str:
        return f"{self.name} ({self.datatype} {dims_text(self.shape)})"


def dims_text(shape: tuple[int, ...], *, batch: bool = False) -> str:
    """A tensor shape as messages write it: ``[N, 1, ?, ?]``, with ``?`` where any size is
    allowed (-1) and ``N`` first for the batch when there is one."""
    dims = ["?" if d < 0 else str(d) for d in shape]
    return "[" + ", ".join(["N", *dims] if batch else dims) + "]"


@dataclass(frozen=True)
class ModelConfig:
    """What the gateway knows about one loaded model: metadata plus configuration."""

    name: str
    versions: tuple[str, ...]
    max_batch_size: int
    """0: the model takes no batch dimension and each call sends the arrays as they are."""
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    parameters: Mapping[str, str] = field(default_factory=dict)
    """The config's ``parameters`` (``string_value`` of each), e.g. ``aicoco.task``."""
    platform: str = ""
    backend: str = ""
    raw_config: Mapping[str, Any] = field(default_factory=dict)
    """The whole configuration as Triton's JSON, to tell whether a reload changed anything."""

    def input(self, name: str) -> TensorSpec | None:
        return next((spec for spec in self.inputs if spec.name == name), None)

    def output(self, name: str) -> TensorSpec | None:
        return next((spec for spec in self.outputs if spec.name == name), None)

    @classmethod
    def from_triton(cls, metadata: Mapping[str, Any], config: Mapping[str, Any]) -> ModelConfig:
        """Build from ``get_model_metadata`` and ``get_model_config`` answers (``as_json=True``).

        Metadata is the authority on tensors (it reflects auto-completed configs); the config adds
        ``max_batch_size``, optional inputs and parameters.
        """
        max_batch_size = int(config.get("max_batch_size", 0))
        optional = {
            str(entry.get("name")) for entry in config.get("input", []) if entry.get("optional")
        }

        def specs(entries: Iterable[Mapping[str, Any]]) -> tuple[TensorSpec, ...]:
            result = []
            for entry in entries:
                shape = tuple(int(d) for d in entry.get("shape", []))
                if max_batch_size > 0:
                    shape = shape[1:]
                name = str(entry["name"])
                result.append(
                    TensorSpec(name, str(entry["datatype"]), shape, optional=name in optional)
                )
            return tuple(result)

        parameters = {
            str(key): str(value.get("string_value", ""))
            for key, value in dict(config.get("parameters", {})).items()
        }
        return cls(
            name=str(metadata.get("name") or config.get("name")),
            versions=tuple(str(v) for v in metadata.get("versions", [])),
            max_batch_size=max_batch_size,
            inputs=specs(metadata.get("inputs", [])),
            outputs=specs(metadata.get("outputs", [])),
            parameters=parameters,
            platform=str(config.get("platform", "")),
            backend=str(config.get("backend", "")),
            raw_config=dict(config),
        )


@dataclass(frozen=True)
class ModelState:
    """One entry of Triton's repository index: every model folder, loaded or not."""

    name: str
    version: str
    state: str
    """``READY``, ``UNAVAILABLE``, ``LOADING``, ``UNLOADING`` or empty (never loaded)."""
    reason: str

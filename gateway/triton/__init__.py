"""The gateway's only way to Triton: one async gRPC channel per process, shared by all requests.

Why a wrapper around ``tritonclient.grpc.aio`` rather than the client itself:

- Models describe themselves. Inputs, outputs, dtypes and ``max_batch_size`` come from Triton's
  model metadata and configuration, fetched once and cached for ``config_ttl_s`` seconds, so a
  request costs one ``ModelInfer`` round trip and a model folder dropped into the repository is
  picked up without a restart.
- No silent casts. A tensor whose dtype or shape does not match the model's declaration is a
  programming error in the pipeline that built it (the built-in pipelines produce exactly the
  declared dtype), so it fails loudly with :class:`~gateway.errors.InternalError` naming the
  model, the input, what was declared and what was given, instead of being converted on the way.
- Volumes do not fit one request. Inputs are split into batches of at most ``max_batch_size``
  that are sent concurrently (bounded, so a 300-slice volume does not hold 300 serialised copies
  at once) and Triton's dynamic batcher merges them with other requests' work; the answers are
  written back in order into one preallocated array per output.
- Errors mean something to the caller: Triton down -> 503, deadline passed -> 504, unknown model
  -> 404, model not ready -> 503, the model itself failed -> 502 with Triton's message.

The package, one job per module: :mod:`~gateway.triton.types` (what a model declares),
:mod:`~gateway.triton.errors` (Triton's and gRPC's failures as the gateway's errors),
:mod:`~gateway.triton.client` (the cached, typed client), :mod:`~gateway.triton.batching`
(checking inputs, splitting them into batches, assembling the answers) and
:mod:`~gateway.triton.pool` (several Tritons behind one client).
"""

from gateway.triton.batching import BatchSink, check_inputs, gather_or_cancel, read_outputs
from gateway.triton.client import CONTROL_TIMEOUT_S, GrpcClient, TritonClient
from gateway.triton.errors import map_triton_error
from gateway.triton.pool import TritonPool
from gateway.triton.types import ModelConfig, ModelState, TensorSpec, dims_text

__all__ = [
    "CONTROL_TIMEOUT_S",
    "BatchSink",
    "GrpcClient",
    "ModelConfig",
    "ModelState",
    "TensorSpec",
    "TritonClient",
    "TritonPool",
    "check_inputs",
    "dims_text",
    "gather_or_cancel",
    "map_triton_error",
    "read_outputs",
]

"""The request's images as the viewer shows them: the readers' stack, windowed to 8-bit PNGs.

The viewer never decodes DICOM or NIfTI itself. It sends the files here and gets back the very
stack the pipelines receive (rescaled values, MONOCHROME1 inverted, a series in geometric order,
a NIfTI volume in its canonical orientation), so what a person sees is what the model saw, and
an annotation's ``image_id`` names the slice it is drawn on.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from gateway.cpu_pool import CpuPool
from gateway.errors import InvalidParameter
from gateway.inference import InferenceRequest
from gateway.readers import ImageSet, ReadLimits, read_images
from gateway.readers.base import finite_range
from gateway.schemas import RenderedSlice, Rendering, WindowLevel

PRESETS: dict[str, WindowLevel] = {
    "lung": WindowLevel(center=-600, width=1500),
    "soft_tissue": WindowLevel(center=40, width=400),
    "bone": WindowLevel(center=400, width=1800),
    "brain": WindowLevel(center=40, width=80),
}
"""CT windows in Hounsfield units, as radiology viewers name them."""
AUTO = "auto"
_AUTO_PERCENTILES = (0.5, 99.5)
"""``auto`` on non-8-bit data: a few outliers (air outside the scanner, metal) do not wash the
picture out."""
_AUTO_SAMPLE = 1_000_000
"""Values looked at to choose the ``auto`` window: enough for stable percentiles on any stack."""
_PNG_COMPRESSION = 1
"""zlib level: fast; 2-3 times the size of level 9 costs nothing on a local network."""


def parse_window(raw: str | None) -> WindowLevel | None:
    """``window=`` of the render route: a preset name, ``center,width``, or ``auto`` (None)."""
    name = (raw or "").strip().lower()
    if name in ("", AUTO):
        return None
    if name in PRESETS:
        return PRESETS[name]
    center, _, width = name.partition(",")
    try:
        values = [float(center), float(width)]
    except ValueError:
        values = []
    if len(values) == 2 and all(np.isfinite(values)) and values[1] > 0:
        return WindowLevel(center=values[0], width=values[1])
    raise InvalidParameter(
        f"window={raw!r} is not a window: send one of {', '.join([AUTO, *PRESETS])}, or "
        "center,width in the images' values (e.g. -600,1500) with a finite, positive width",
        details={"window": raw},
    )


@dataclass(frozen=True)
class RenderPipeline:
    """The render as :mod:`gateway.runner` runs it, a pipeline like a model's: the readers'
    stack is its ``read`` stage; the windowed PNGs are made by :meth:`Pictures.to_json_bytes`
    in the run's ``format`` stage."""

    cpu: CpuPool
    limits: ReadLimits
    window: WindowLevel | None

    async def __call__(self, request: InferenceRequest) -> Pictures:
        with request.stage("read"):
            stack = await self.cpu.run(read_images, request.images, request.uploads, self.limits)
        return Pictures(stack, self.window)


@dataclass(frozen=True)
class Pictures:
    """A read stack and its window: the answer, once encoded (CPU-bound)."""

    stack: ImageSet
    window: WindowLevel | None

    def to_json_bytes(self) -> bytes:
        return rendering(self.stack, self.window).model_dump_json().encode()


def rendering(stack: ImageSet, window: WindowLevel | None) -> Rendering:
    pixels = stack.pixels
    depth, height, width = pixels.shape[:3]
    rgb = pixels.ndim == 4
    used = None if rgb else (window or auto_window(pixels))
    slices = []
    for z in range(depth):
        entry = stack.slice_images[z] if len(stack.slice_images) == depth else None
        whole = stack.slice_images[0]
        picture = pixels[z] if used is None else apply_window(pixels[z], used)
        slices.append(
            RenderedSlice(
                z=z,
                image_id=(entry or whole).id,
                file_name=(entry or whole).file_name,
                index=entry.index if entry is not None else z,
                png=_png(picture),
            )
        )
    return Rendering(
        width=width,
        height=height,
        depth=depth,
        rgb=rgb,
        hounsfield=stack.hounsfield,
        modality=stack.modality,
        value_range=finite_range(pixels),
        window=used,
        presets=PRESETS,
        slices=slices,
    )


def auto_window(pixels: np.ndarray) -> WindowLevel:
    """8-bit pictures as they are; anything else from its 0.5th to its 99.5th percentile."""
    if pixels.dtype == np.uint8:
        return WindowLevel(center=127.5, width=256)
    flat = pixels.reshape(-1)
    sample = flat[:: max(1, flat.size // _AUTO_SAMPLE)].astype(np.float64)
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return WindowLevel(center=0, width=1)
    low, high = np.percentile(sample, _AUTO_PERCENTILES)
    return WindowLevel(center=float(low + high) / 2, width=max(float(high - low), 1.0))


def apply_window(pixels: np.ndarray, window: WindowLevel) -> np.ndarray:
    """Linear window to ``uint8``; values outside it clip to black or white, NaN is black."""
    low = window.center - window.width / 2
    scaled = (pixels.astype(np.float32) - np.float32(low)) * np.float32(255 / window.width)
    picture: np.ndarray = np.nan_to_num(np.clip(scaled, 0, 255), nan=0).round().astype(np.uint8)
    return picture


def _png(picture: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(picture)).save(
        buffer, format="PNG", compress_level=_PNG_COMPRESSION
    )
    return base64.b64encode(buffer.getvalue()).decode("ascii")

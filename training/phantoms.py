"""CT-like chest phantoms: the data the example models are trained and tested on.

Real chest CT cannot ship with the repository, so the models learn from synthetic axial slices
and volumes in Hounsfield units whose ground truth (lungs, nodules, their sizes and boxes) is
known exactly. Tests and benchmarks use the same generator, so "a phantom with a known lesion"
is one function call away. Only numpy and scipy are needed: serving and tests never import
torch.

Conventions:

- Arrays are ``(rows, cols)`` or ``(slices, rows, cols)``; row 0 is anterior, column 0 is the
  patient's right (the radiological convention), so ``left_lung`` lies on the image's right.
- Continuous coordinates put pixel ``i`` on ``[i, i + 1)``: a box ``(x1, y1, x2, y2)`` of a
  lesion centred at ``(row, col)`` with radius ``r`` is ``(col - r, row - r, col + r, row + r)``,
  which scales exactly when an image is resized (pixel-centre, "align corners = false").
- The field of view is :data:`FIELD_OF_VIEW_MM` whatever the matrix size, so a 512-pixel slice
  has 0.7 mm pixels and a 256-pixel one 1.4 mm.
- Everything random comes from the ``numpy.random.Generator`` passed in: the same seed gives the
  same phantom.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import ndimage

__all__ = [
    "AIR_HU",
    "FIELD_OF_VIEW_MM",
    "LARGE_NODULE_MM",
    "LUNG_WINDOW",
    "NODULE_DIAMETER_RANGE_MM",
    "Lesion",
    "PhantomSlice",
    "PhantomVolume",
    "phantom_slice",
    "phantom_volume",
    "pixel_spacing_mm",
    "resize_bilinear",
    "window_to_uint8",
    "window_to_unit",
]

FloatArray = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]

FIELD_OF_VIEW_MM = 358.4
"""Reconstruction diameter of every phantom: 0.7 mm pixels at 512 x 512, a usual chest CT."""

LUNG_WINDOW = (-600, 1500)
"""The lung window (centre, width) in HU that every example model is trained with."""

NODULE_DIAMETER_RANGE_MM = (5.0, 30.0)
"""Random nodule diameters are log-uniform in this range (a "nodule" is 30 mm at most)."""

LARGE_NODULE_MM = 10.0
"""Diameter from which a nodule counts as large (the classifier's ``large_nodule``)."""

AIR_HU = -1000

_LESION_HU = 30.0
_LUNG_HU = -850.0
_SOFT_TISSUE_HU = 40.0
_FAT_HU = -90.0
_BONE_HU = 700.0
_TABLE_HU = 150.0


@dataclass(frozen=True)
class Lesion:
    """One spherical (3D) or round (2D) nodule, in the pixel coordinates of its phantom."""

    center: tuple[float, ...]
    """``(row, col)`` for a slice, ``(slice, row, col)`` for a volume, continuous coordinates."""
    radius_px: float
    """In-plane radius in pixels."""
    diameter_mm: float
    side: Literal["left", "right"]
    """The patient's side: ``left`` is on the image's right."""

    @property
    def box(self) -> tuple[float, float, float, float]:
        """In-plane ``(x1, y1, x2, y2)`` in continuous pixel coordinates."""
        row, col = self.center[-2], self.center[-1]
        r = self.radius_px
        return (col - r, row - r, col + r, row + r)


@dataclass(frozen=True)
class PhantomSlice:
    hu: npt.NDArray[np.int16]
    """``(H, W)`` Hounsfield units."""
    masks: dict[str, BoolArray]
    """``body``, ``right_lung``, ``left_lung``, ``lung`` (both, nodules included), ``lesion``."""
    lesion_labels: npt.NDArray[np.int32]
    """``(H, W)``: 0 outside nodules, ``i + 1`` inside ``lesions[i]``."""
    lesions: tuple[Lesion, ...]
    spacing_mm: float


@dataclass(frozen=True)
class PhantomVolume:
    hu: npt.NDArray[np.int16]
    """``(Z, H, W)`` Hounsfield units."""
    lung_labels: npt.NDArray[np.uint8]
    """``(Z, H, W)``: 0 outside the lungs, 1 in the right lung, 2 in the left (nodules included)."""
    lesion_labels: npt.NDArray[np.int32]
    """``(Z, H, W)``: 0 outside nodules, ``i + 1`` inside ``lesions[i]``."""
    lesions: tuple[Lesion, ...]
    spacing_mm: tuple[float, float, float]
    """``(slice, row, col)`` spacing."""

    @property
    def lung(self) -> BoolArray:
        """Both lungs, nodules included."""
        mask: BoolArray = self.lung_labels > 0
        return mask


def pixel_spacing_mm(size: int) -> float:
    return FIELD_OF_VIEW_MM / size


def window_to_unit(hu: npt.ArrayLike, center: float, width: float) -> FloatArray:
    """Clip to ``[center - width / 2, center + width / 2]`` and map linearly to ``[0, 1]``.

    This is the gateway's preprocessing rule for Hounsfield units, so models see the same values
    in training and in service.
    """
    low = center - width / 2.0
    values = (np.asarray(hu, dtype=np.float32) - np.float32(low)) / np.float32(width)
    unit: FloatArray = np.clip(values, 0.0, 1.0).astype(np.float32, copy=False)
    return unit


def window_to_uint8(hu: npt.ArrayLike, center: float, width: float) -> npt.NDArray[np.uint8]:
    """An 8-bit rendering, as a PACS would export a windowed slice to PNG."""
    rendering: npt.NDArray[np.uint8] = np.rint(window_to_unit(hu, center, width) * 255.0).astype(
        np.uint8
    )
    return rendering


def resize_bilinear(image: npt.ArrayLike, shape: tuple[int, int]) -> FloatArray:
    """Resize the last two axes bilinearly with pixel-centre alignment.

    Matches ``skimage.transform.resize(order=1, anti_aliasing=False)``, the resampling the
    gateway applies before inference.
    """
    array = np.asarray(image, dtype=np.float32)
    factors = [1.0] * (array.ndim - 2) + [
        shape[0] / array.shape[-2],
        shape[1] / array.shape[-1],
    ]
    out: FloatArray = ndimage.zoom(array, factors, order=1, mode="nearest", grid_mode=True)
    return out


@dataclass(frozen=True)
class _Ellipse:
    row: float
    col: float
    semi_rows: float
    semi_cols: float
    angle: float = 0.0

    def scaled(self, factor: float) -> _Ellipse:
        return _Ellipse(
            self.row, self.col, self.semi_rows * factor, self.semi_cols * factor, self.angle
        )

    def inside(self, rows: FloatArray, cols: FloatArray) -> BoolArray:
        dr = rows - self.row
        dc = cols - self.col
        cos, sin = math.cos(self.angle), math.sin(self.angle)
        u = (dc * cos + dr * sin) / self.semi_cols
        v = (-dc * sin + dr * cos) / self.semi_rows
        result: BoolArray = u * u + v * v <= 1.0
        return result


@dataclass(frozen=True)
class _Vessel:
    """A vessel as a tube through the slices: a bright dot wherever it crosses a slice."""

    start: tuple[float, float]
    drift: tuple[float, float]
    radius: float
    hu: float
    z_range: tuple[float, float]


@dataclass(frozen=True)
class _Anatomy:
    """Shape parameters of one patient, in pixels of a ``size`` matrix.

    Slices of a volume share one anatomy and differ by their height ``z`` in ``[0, 1]`` (0 at
    the lung apex end, 1 at the base), so structures stay continuous from slice to slice.
    """

    size: int
    body: _Ellipse
    right_lung: _Ellipse
    left_lung: _Ellipse
    heart: _Ellipse
    spine: _Ellipse
    ribs: tuple[_Ellipse, ...]
    vessels: tuple[_Vessel, ...]
    lung_z: tuple[float, float]


def _sample_anatomy(rng: np.random.Generator, size: int) -> _Anatomy:
    s = size / 512.0
    centre_row = size * (0.5 + rng.uniform(-0.03, 0.03))
    centre_col = size * (0.5 + rng.uniform(-0.03, 0.03))
    a = size * rng.uniform(0.40, 0.46)
    b = size * rng.uniform(0.27, 0.33)
    body = _Ellipse(centre_row, centre_col, b, a, rng.uniform(-0.04, 0.04))
    lung_rows = b * rng.uniform(0.62, 0.72)
    right_lung = _Ellipse(
        centre_row - 0.08 * b,
        centre_col - a * rng.uniform(0.40, 0.46),
        lung_rows,
        a * rng.uniform(0.30, 0.35),
        rng.uniform(-0.2, 0.2),
    )
    left_lung = _Ellipse(
        centre_row - 0.08 * b,
        centre_col + a * rng.uniform(0.40, 0.46),
        lung_rows * rng.uniform(0.92, 1.0),
        a * rng.uniform(0.28, 0.33),
        rng.uniform(-0.2, 0.2),
    )
    heart = _Ellipse(
        centre_row + 0.05 * b,
        centre_col + a * rng.uniform(0.05, 0.15),
        b * rng.uniform(0.35, 0.45),
        a * rng.uniform(0.22, 0.28),
        rng.uniform(-0.5, -0.2),
    )
    spine = _Ellipse(centre_row + 0.72 * b, centre_col, 0.15 * b, 0.13 * b)
    ribs = []
    for theta in np.linspace(0.25 * math.pi, 1.75 * math.pi, 10):
        angle = theta + rng.uniform(-0.08, 0.08)
        ribs.append(
            _Ellipse(
                centre_row - 0.92 * b * math.cos(angle),
                centre_col + 0.92 * a * math.sin(angle),
                rng.uniform(5.0, 8.0) * s,
                rng.uniform(8.0, 14.0) * s,
                angle,
            )
        )
    vessels = []
    for _ in range(int(rng.integers(40, 80))):
        lung = right_lung if rng.random() < 0.5 else left_lung
        rho = math.sqrt(rng.random()) * 0.9
        phi = rng.uniform(0, 2 * math.pi)
        start = (
            lung.row + rho * lung.semi_rows * math.sin(phi),
            lung.col + rho * lung.semi_cols * math.cos(phi),
        )
        z0 = rng.uniform(-0.2, 1.0)
        vessels.append(
            _Vessel(
                start=start,
                drift=(rng.normal(0, 0.05 * size), rng.normal(0, 0.05 * size)),
                radius=rng.uniform(0.35, 2.0) / pixel_spacing_mm(size),
                hu=rng.uniform(-150.0, 40.0),
                z_range=(z0, z0 + rng.uniform(0.2, 0.8)),
            )
        )
    return _Anatomy(
        size=size,
        body=body,
        right_lung=right_lung,
        left_lung=left_lung,
        heart=heart,
        spine=spine,
        ribs=tuple(ribs),
        vessels=tuple(vessels),
        lung_z=(rng.uniform(0.0, 0.1), rng.uniform(0.9, 1.0)),
    )


def _coordinates(size: int) -> tuple[FloatArray, FloatArray]:
    centres = np.arange(size, dtype=np.float32) + np.float32(0.5)
    return centres[:, None], centres[None, :]


def _paint_disc(
    image: FloatArray,
    row: float,
    col: float,
    radius: float,
    value: float,
    mask: BoolArray | None = None,
) -> None:
    """Blend a disc with a one-pixel soft edge (partial volume) into ``image`` in place."""
    size_r, size_c = image.shape
    r0, r1 = max(int(row - radius - 2), 0), min(int(row + radius + 3), size_r)
    c0, c1 = max(int(col - radius - 2), 0), min(int(col + radius + 3), size_c)
    if r0 >= r1 or c0 >= c1:
        return
    rows = np.arange(r0, r1, dtype=np.float32)[:, None] + np.float32(0.5)
    cols = np.arange(c0, c1, dtype=np.float32)[None, :] + np.float32(0.5)
    distance = np.sqrt((rows - row) ** 2 + (cols - col) ** 2)
    alpha = np.clip(radius + 0.5 - distance, 0.0, 1.0)
    if mask is not None:
        alpha = alpha * mask[r0:r1, c0:c1]
    window = image[r0:r1, c0:c1]
    window += alpha * (value - window)


def _lung_profile(anatomy: _Anatomy, z: float) -> float:
    """Cross-section scale of the lungs at height ``z``: an ellipsoid, 0 outside the lungs."""
    top, bottom = anatomy.lung_z
    if not top < z < bottom:
        return 0.0
    t = (z - top) / (bottom - top)
    apex_to_base = math.sqrt(max(1.0 - ((1.0 - t) / 1.0) ** 2, 0.0))
    taper = 1.0 - 0.35 * max(t - 0.75, 0.0) / 0.25
    return apex_to_base * taper


def _render_anatomy(
    anatomy: _Anatomy, z: float, rows: FloatArray, cols: FloatArray
) -> tuple[FloatArray, dict[str, BoolArray]]:
    """Noiseless HU and masks of one slice at height ``z``, before nodules are added."""
    size = anatomy.size
    body = anatomy.body.inside(rows, cols)
    hu = np.full((size, size), float(AIR_HU), dtype=np.float32)
    hu[body] = _FAT_HU
    hu[anatomy.body.scaled(0.9).inside(rows, cols)] = _SOFT_TISSUE_HU
    table_row = anatomy.body.row + anatomy.body.semi_rows + 0.02 * size
    table = (np.abs(rows - table_row) < 0.008 * size) & (np.abs(cols - size / 2) < 0.45 * size)
    hu[np.broadcast_to(table, hu.shape)] = _TABLE_HU
    profile = _lung_profile(anatomy, z)
    if profile > 0.0:
        heart = anatomy.heart.scaled(min(1.0, 0.4 + 0.8 * z)).inside(rows, cols)
        right = anatomy.right_lung.scaled(profile).inside(rows, cols) & ~heart
        left = anatomy.left_lung.scaled(profile).inside(rows, cols) & ~heart
    else:
        heart = np.zeros((size, size), dtype=bool)
        right = np.zeros((size, size), dtype=bool)
        left = np.zeros((size, size), dtype=bool)
    lung = right | left
    hu[lung] = _LUNG_HU
    for vessel in anatomy.vessels:
        z0, z1 = vessel.z_range
        if z0 <= z <= z1:
            t = (z - z0) / (z1 - z0)
            _paint_disc(
                hu,
                vessel.start[0] + t * vessel.drift[0],
                vessel.start[1] + t * vessel.drift[1],
                vessel.radius,
                vessel.hu,
                mask=lung,
            )
    for rib in anatomy.ribs:
        hu[rib.inside(rows, cols) & body] = _BONE_HU
    spine = anatomy.spine.inside(rows, cols)
    hu[spine] = _BONE_HU
    hu[anatomy.spine.scaled(0.7).inside(rows, cols)] = 250.0
    masks = {"body": body, "right_lung": right, "left_lung": left}
    return hu, masks


def _lesion_diameters(
    rng: np.random.Generator, lesions: int | Sequence[float] | None
) -> list[float]:
    if lesions is None:
        count = 0 if rng.random() < 0.5 else int(rng.integers(1, 4))
    elif isinstance(lesions, int):
        count = lesions
    else:
        return [float(d) for d in lesions]
    low, high = NODULE_DIAMETER_RANGE_MM
    return [float(math.exp(rng.uniform(math.log(low), math.log(high)))) for _ in range(count)]


def _noise(rng: np.random.Generator, shape: tuple[int, ...], noise_hu: float) -> FloatArray:
    """Correlated noise like CT's: white noise low-passed, rescaled to ``noise_hu`` std."""
    sigma = 0.8
    white = rng.standard_normal(shape, dtype=np.float32)
    axes_sigma = [0.0] * (len(shape) - 2) + [sigma, sigma]
    smooth: FloatArray = ndimage.gaussian_filter(white, axes_sigma)
    return smooth * np.float32(noise_hu * 2.0 * math.sqrt(math.pi) * sigma)


def _finish(hu: FloatArray, rng: np.random.Generator, noise_hu: float) -> npt.NDArray[np.int16]:
    blur = [0.0] * (hu.ndim - 2) + [0.6, 0.6]
    smooth: FloatArray = ndimage.gaussian_filter(hu, blur)
    smooth += _noise(rng, hu.shape, noise_hu)
    result: npt.NDArray[np.int16] = np.clip(np.rint(smooth), -1024, 3071).astype(np.int16)
    return result


def phantom_slice(
    rng: np.random.Generator,
    size: int = 512,
    lesions: int | Sequence[float] | None = None,
    *,
    noise_hu: float = 20.0,
) -> PhantomSlice:
    """One axial chest slice in HU with its ground truth.

    ``lesions``: ``None`` for a random count (none in half the slices, else 1 to 3), an int for
    that many nodules of random diameter, or the diameters in mm. Nodules lie entirely inside a
    lung and do not overlap; a nodule that finds no room after many tries is left out, so check
    ``len(result.lesions)`` when placing large ones.
    """
    anatomy = _sample_anatomy(rng, size)
    rows, cols = _coordinates(size)
    hu, masks = _render_anatomy(anatomy, float(rng.uniform(0.45, 0.75)), rows, cols)
    lung = masks["right_lung"] | masks["left_lung"]
    spacing = pixel_spacing_mm(size)
    lung_depth = ndimage.distance_transform_edt(lung)
    labels = np.zeros((size, size), dtype=np.int32)
    placed: list[Lesion] = []
    for diameter in _lesion_diameters(rng, lesions):
        radius = diameter / 2.0 / spacing
        centre = _place_disc(rng, lung_depth, placed, radius)
        if centre is None:
            continue
        row, col = centre
        disc = (rows - row) ** 2 + (cols - col) ** 2 <= radius * radius
        labels[disc] = len(placed) + 1
        _paint_disc(hu, row, col, radius, _LESION_HU + rng.normal(0.0, 10.0))
        side: Literal["left", "right"] = "left" if col >= anatomy.body.col else "right"
        placed.append(Lesion((row, col), radius, diameter, side))
    masks["lung"] = lung
    masks["lesion"] = labels > 0
    return PhantomSlice(
        hu=_finish(hu, rng, noise_hu),
        masks=masks,
        lesion_labels=labels,
        lesions=tuple(placed),
        spacing_mm=spacing,
    )


def phantom_volume(
    rng: np.random.Generator,
    slices: int = 64,
    size: int = 512,
    lesions: int | Sequence[float] | None = None,
    *,
    slice_thickness_mm: float = 5.0,
    noise_hu: float = 20.0,
) -> PhantomVolume:
    """A chest volume of ``slices`` axial slices covering the lungs from apex to base.

    Nodules are spheres (``lesions`` as in :func:`phantom_slice`; ``None`` gives 1 to 4), each
    entirely inside a lung; ``lesion_labels`` numbers them from 1 in the order of ``lesions``.
    ``slice_thickness_mm`` is the spacing between slices, which sets how many slices a sphere
    spans. A 64 x 512 x 512 volume takes about a second.
    """
    anatomy = _sample_anatomy(rng, size)
    rows, cols = _coordinates(size)
    spacing = pixel_spacing_mm(size)
    hu = np.empty((slices, size, size), dtype=np.float32)
    lung_labels = np.empty((slices, size, size), dtype=np.uint8)
    for z in range(slices):
        slice_hu, masks = _render_anatomy(anatomy, (z + 0.5) / slices, rows, cols)
        hu[z] = slice_hu
        lung_labels[z] = masks["right_lung"] + 2 * masks["left_lung"].astype(np.uint8)
    lung = lung_labels > 0
    labels = np.zeros(hu.shape, dtype=np.int32)
    placed: list[Lesion] = []
    if lesions is None:
        lesions = int(rng.integers(1, 5))
    for diameter in _lesion_diameters(rng, lesions):
        radius_mm = diameter / 2.0
        lesion = _place_sphere(rng, lung, labels, radius_mm, (slice_thickness_mm, spacing))
        if lesion is None:
            continue
        z_c, row, col = lesion
        radius_px = radius_mm / spacing
        z0 = max(int(z_c - radius_mm / slice_thickness_mm) - 1, 0)
        z1 = min(int(z_c + radius_mm / slice_thickness_mm) + 2, slices)
        for z in range(z0, z1):
            dz_mm = (z + 0.5 - z_c) * slice_thickness_mm
            section = radius_mm * radius_mm - dz_mm * dz_mm
            if section <= 0.0:
                continue
            r = math.sqrt(section) / spacing
            disc = (rows - row) ** 2 + (cols - col) ** 2 <= r * r
            labels[z][disc] = len(placed) + 1
            _paint_disc(hu[z], row, col, r, _LESION_HU + rng.normal(0.0, 10.0))
        side: Literal["left", "right"] = "left" if col >= anatomy.body.col else "right"
        placed.append(Lesion((z_c, row, col), radius_px, diameter, side))
    return PhantomVolume(
        hu=_finish(hu, rng, noise_hu),
        lung_labels=lung_labels,
        lesion_labels=labels,
        lesions=tuple(placed),
        spacing_mm=(slice_thickness_mm, spacing, spacing),
    )


def _place_disc(
    rng: np.random.Generator,
    lung_depth: npt.NDArray[np.float64],
    placed: Sequence[Lesion],
    radius: float,
) -> tuple[float, float] | None:
    """A centre whose disc (with a one-pixel margin) lies in the lung, clear of other nodules."""
    candidates = np.flatnonzero(lung_depth > radius + 1.5)
    size = lung_depth.shape[1]
    for _ in range(100):
        if candidates.size == 0:
            return None
        index = int(candidates[rng.integers(candidates.size)])
        row = index // size + rng.uniform(0.0, 1.0)
        col = index % size + rng.uniform(0.0, 1.0)
        if all(
            math.hypot(row - other.center[0], col - other.center[1])
            > radius + other.radius_px + 1.0
            for other in placed
        ):
            return row, col
    return None


def _place_sphere(
    rng: np.random.Generator,
    lung: BoolArray,
    labels: npt.NDArray[np.int32],
    radius_mm: float,
    spacing: tuple[float, float],
) -> tuple[float, float, float] | None:
    """A centre whose sphere (with a 1 mm margin) lies in the lung and clear of other nodules."""
    thickness, pixel = spacing
    slices, size, _ = lung.shape
    reach_z = (radius_mm + 1.0) / thickness
    reach_xy = (radius_mm + 1.0) / pixel
    lung_voxels = np.flatnonzero(lung)
    if lung_voxels.size == 0:
        return None
    for _ in range(100):
        index = int(lung_voxels[rng.integers(lung_voxels.size)])
        z_c = index // (size * size) + rng.uniform(0.0, 1.0)
        row = (index // size) % size + rng.uniform(0.0, 1.0)
        col = index % size + rng.uniform(0.0, 1.0)
        z0, z1 = int(z_c - reach_z), int(z_c + reach_z) + 1
        r0, r1 = int(row - reach_xy), int(row + reach_xy) + 1
        c0, c1 = int(col - reach_xy), int(col + reach_xy) + 1
        if z0 < 0 or r0 < 0 or c0 < 0 or z1 > slices or r1 > size or c1 > size:
            continue
        zz = (np.arange(z0, z1)[:, None, None] + 0.5 - z_c) / reach_z
        rr = (np.arange(r0, r1)[None, :, None] + 0.5 - row) / reach_xy
        cc = (np.arange(c0, c1)[None, None, :] + 0.5 - col) / reach_xy
        ball = zz * zz + rr * rr + cc * cc <= 1.0
        region = (slice(z0, z1), slice(r0, r1), slice(c0, c1))
        if lung[region][ball].all() and not labels[region][ball].any():
            return z_c, row, col
    return None

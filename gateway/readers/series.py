"""A DICOM series sent as one file per slice: checked, then ordered in space.

Order: by the projection of ImagePositionPatient on the slice normal, the cross product of
ImageOrientationPatient's row and column direction cosines, ascending. For an axial series
(normal towards the head) slice 0 is the most inferior. Sorting by the z coordinate alone (as
FLaVor does) is wrong for tilted and sagittal/coronal series, where z can be constant or run
against the slice order. When any file lacks position or orientation, InstanceNumber orders the
slices; when that is missing too, the entries' ``index`` does.

Files of several series never get here: :mod:`gateway.readers.selection` has chosen one. Checks,
each a 422 ``inconsistent_series`` naming the files: one size, grayscale or colour throughout,
one orientation (within 1e-3 of each cosine), no two slices at one position (within 1e-3 mm
along the normal), and no gap wider than 1.5 times the median spacing (missing slices).
Unevenly spaced but complete series are accepted; the z spacing reported is the median.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from gateway import progress
from gateway.errors import InconsistentSeries
from gateway.readers.base import ImageSet
from gateway.readers.dicom import DicomHeader, decode_frames, read_header
from gateway.readers.limits import VoxelBudget
from gateway.readers.matching import FileEntries
from gateway.readers.selection import chosen_series
from gateway.readers.stack import StackBuilder, require_one_slice, spacing

ORIENTATION_TOLERANCE = 1e-3
"""Largest difference between two files' direction cosines that still means one orientation."""
DUPLICATE_TOLERANCE_MM = 1e-3
GAP_FACTOR = 1.5
"""A step this many times the median spacing means slices are missing."""


@dataclass(frozen=True)
class SeriesOrder:
    order: list[int]
    """Positions in the input sequence, first slice first."""
    slice_spacing: float | None
    """Median distance between consecutive slices along the normal; None without geometry."""


def check_series(headers: Sequence[DicomHeader]) -> None:
    """Refuse files that cannot be one volume: several sizes or colour models."""
    _one_value(headers, lambda h: f"{h.rows} x {h.columns}", "size (Rows x Columns)")
    _one_value(headers, lambda h: "colour" if h.is_color else "grayscale", "colour model")


def order_series(headers: Sequence[DicomHeader]) -> SeriesOrder:
    """The slices' order in space (see the module's docstring), after the geometry checks."""
    geometric = all(h.position is not None and h.orientation is not None for h in headers)
    if geometric:
        return _by_position(headers)
    numbers = [h.instance_number for h in headers]
    if all(n is not None for n in numbers):
        duplicates = _duplicates({h.file_name: h.instance_number for h in headers})
        if duplicates:
            raise InconsistentSeries(
                "the files have no ImagePositionPatient/ImageOrientationPatient to order them and "
                f"their InstanceNumbers repeat: {duplicates}",
                details={"duplicates": duplicates},
            )
        order = sorted(range(len(headers)), key=lambda i: numbers[i] or 0)
        return SeriesOrder(order, None)
    return SeriesOrder(list(range(len(headers))), None)


def _by_position(headers: Sequence[DicomHeader]) -> SeriesOrder:
    orientations = np.array([h.orientation for h in headers], dtype=np.float64)
    deviating = np.abs(orientations - orientations[0]).max(axis=1) > ORIENTATION_TOLERANCE
    if deviating.any():
        other = int(np.argmax(deviating))
        raise InconsistentSeries(
            "the files are not one series: mixed orientations (ImageOrientationPatient "
            f"{_cosines(headers[0])} in '{headers[0].file_name}', {_cosines(headers[other])} in "
            f"'{headers[other].file_name}', {int(deviating.sum())} file(s) differ from the first)",
            details={"file_names": [headers[0].file_name, headers[other].file_name]},
        )
    row, col = orientations[0, :3], orientations[0, 3:]
    normal = np.cross(row, col)
    normal /= np.linalg.norm(normal)
    projections = np.array([h.position for h in headers], dtype=np.float64) @ normal
    order = np.argsort(projections, kind="stable")
    if len(order) < 2:
        return SeriesOrder([int(i) for i in order], None)
    steps = np.diff(projections[order])
    duplicated = np.flatnonzero(steps < DUPLICATE_TOLERANCE_MM)
    if duplicated.size:
        a, b = headers[order[duplicated[0]]], headers[order[duplicated[0] + 1]]
        raise InconsistentSeries(
            f"'{a.file_name}' and '{b.file_name}' are at the same position "
            f"({projections[order[duplicated[0]]]:.3f} mm along the slice normal); "
            f"{duplicated.size} duplicate position(s) in all: send each slice once",
            details={"file_names": [a.file_name, b.file_name]},
        )
    spacing = float(np.median(steps))
    gaps = np.flatnonzero(steps > GAP_FACTOR * spacing)
    if gaps.size:
        gap = gaps[0]
        a, b = headers[order[gap]], headers[order[gap + 1]]
        missing = round(float(steps[gap]) / spacing) - 1
        raise InconsistentSeries(
            f"slices are missing between '{a.file_name}' and '{b.file_name}': they are "
            f"{steps[gap]:.3f} mm apart where the series' spacing is {spacing:.3f} mm (about "
            f"{max(missing, 1)} slice(s) missing; {gaps.size} gap(s) in all)",
            details={"file_names": [a.file_name, b.file_name], "gaps": int(gaps.size)},
        )
    return SeriesOrder([int(i) for i in order], spacing)


def _one_value(
    headers: Sequence[DicomHeader], value: Callable[[DicomHeader], str | None], what: str
) -> None:
    groups: dict[str, list[str]] = defaultdict(list)
    for header in headers:
        groups[str(value(header))].append(header.file_name)
    if len(groups) > 1:
        described = "; ".join(
            f"{key}: {len(names)} file(s), e.g. '{names[0]}'" for key, names in groups.items()
        )
        raise InconsistentSeries(
            f"the DICOM files are not one series: mixed {what} ({described})",
            details={"groups": {key: names[:10] for key, names in groups.items()}},
        )


def _duplicates(values: dict[str, int | None]) -> dict[str, list[str]]:
    by_value: dict[int | None, list[str]] = defaultdict(list)
    for name, number in values.items():
        by_value[number].append(name)
    return {str(k): names for k, names in by_value.items() if len(names) > 1}


def _cosines(header: DicomHeader) -> str:
    return "[" + ", ".join(f"{v:g}" for v in header.orientation or ()) + "]"


def read_series(pairs: Sequence[FileEntries], budget: VoxelBudget) -> ImageSet:
    """Several single-frame DICOM files: the chosen series, checked, in geometric order."""
    pairs, headers = _chosen(pairs, [read_header(pair.upload, budget) for pair in pairs])
    for header in headers:
        require_one_slice(header.file_name, header.frames, len(pairs))
    check_series(headers)
    series = order_series(headers)
    builder = StackBuilder(len(headers))
    report = progress.current()
    report.start("slices", len(series.order))
    for z, i in enumerate(series.order):
        for frame in decode_frames(headers[i]):
            builder.put(z, frame, headers[i].file_name)
        report.advance(1)
    modalities = {h.modality for h in headers}
    first = headers[series.order[0]]
    return ImageSet(
        pixels=builder.result(),
        hounsfield=all(h.hounsfield for h in headers),
        spacing=spacing(
            first.pixel_spacing, series.slice_spacing or first.slice_spacing, len(headers)
        ),
        slice_images=[pairs[i].entries[0] for i in series.order],
        modality=modalities.pop() if len(modalities) == 1 else None,
    )


def _chosen(
    pairs: Sequence[FileEntries], headers: Sequence[DicomHeader]
) -> tuple[Sequence[FileEntries], Sequence[DicomHeader]]:
    """Files of several series: the one :mod:`gateway.readers.selection` chooses, alone."""
    keep = chosen_series([header.dataset for header in headers])
    return [pairs[i] for i in keep], [headers[i] for i in keep]

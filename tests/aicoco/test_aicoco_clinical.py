"""The segmentation strategy at clinical sizes: 512 x 512 slices, 100 to 600 of them, findings
sparse and far apart in z, from one to thousands of labels, in both output modes.

Small shapes never reach the code paths that real volumes do: a channel's bounding box is cut
into blocks of slices, and at 512 x 512 a block holds only a few slices, so blocks with no
foreground inside the box appear as soon as two findings lie far apart. Each example is checked
exactly against the label map it was made from, slice by slice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from scipy import ndimage

from aicoco import AiCOCOOutput, AiImage, AiRLE, IdGenerator, SegmentationStrategy
from aicoco.masks import polygons_to_mask
from aicoco.rle import decode

SIDE = 512


@dataclass(frozen=True)
class Finding:
    z: int
    row: int
    col: int
    height: int
    width: int
    label: int


def images(count: int) -> list[AiImage]:
    return [AiImage(id=f"slice-{z:04d}", file_name=f"{z}.dcm", index=z) for z in range(count)]


def paint(depth: int, findings: list[Finding]) -> NDArray[np.uint16]:
    labels = np.zeros((1, depth, SIDE, SIDE), dtype=np.uint16)
    for f in findings:
        labels[0, f.z, f.row : f.row + f.height, f.col : f.col + f.width] = f.label
    return labels


def check_exact(document: AiCOCOOutput, labels: NDArray[np.integer], lossless: bool) -> None:
    """Every (label, slice) with foreground has exactly one annotation that decodes to it.

    Polygons are compared inside the label's bounding box on that slice (with every vertex
    inside it), so that thousands of labels cost thousands of small fills, not full slices.
    """
    channel = labels[0]
    slice_of = {image.id: z for z, image in enumerate(document.images)}
    present = np.unique(channel[channel > 0]).tolist()
    assert len(document.objects) == len(present)
    label_of = {obj.id: label for obj, label in zip(document.objects, present, strict=True)}
    boxes: dict[int, list[tuple[slice, slice] | None]] = {}
    seen: set[tuple[int, int]] = set()
    for annotation in document.annotations:
        label, z = label_of[annotation.object_id], slice_of[annotation.image_id]
        assert (label, z) not in seen
        seen.add((label, z))
        if lossless:
            assert isinstance(annotation.segmentation, AiRLE)
            assert annotation.iscrowd == 1
            assert np.array_equal(decode(annotation.segmentation), channel[z] == label)
            continue
        if z not in boxes:
            boxes[z] = ndimage.find_objects(channel[z])
        box = boxes[z][label - 1]
        assert box is not None, (label, z)
        rows, cols = box
        truth = channel[z][box] == label
        polygons = annotation.segmentation
        assert isinstance(polygons, list)
        shifted = []
        for polygon in polygons:
            xy = np.asarray(polygon).reshape(-1, 2) - [cols.start, rows.start]
            assert (xy >= 0).all() and (xy < truth.shape[::-1]).all(), (label, z)
            shifted.append(xy.ravel().tolist())
        # Polygons describe outer boundaries: holes come back filled.
        filled = ndimage.binary_fill_holes(truth)
        assert np.array_equal(polygons_to_mask(shifted, truth.shape), filled), (label, z)
    occupied = np.flatnonzero(channel.any(axis=(1, 2)))
    assert seen == {(int(v), int(z)) for z in occupied for v in np.unique(channel[z]) if v}


def test_minimal_case_empty_block_inside_the_bounding_box() -> None:
    """The reported crash: squares on the first and last of 24 slices, 490 x 490 each, leave
    the blocks between them empty (IndexError before the fix)."""
    mask = np.zeros((1, 24, SIDE, SIDE), dtype=np.uint8)
    mask[0, [0, 23], 10:500, 10:500] = 1
    for lossless in (False, True):
        document = SegmentationStrategy(lossless=lossless)(
            mask, images=images(24), categories=[{"name": "lesion"}], ids=IdGenerator(seed=1)
        )
        check_exact(document, mask, lossless)
        assert len(document.annotations) == 2


@pytest.mark.parametrize("lossless", [False, True], ids=["polygons", "lossless"])
def test_long_series_findings_200_slices_apart(lossless: bool) -> None:
    """300 slices of 512 x 512, two findings 200 slices apart, one of them large."""
    findings = [Finding(40, 20, 30, 450, 460, 1), Finding(240, 300, 200, 60, 80, 2)]
    labels = paint(300, findings)
    document = SegmentationStrategy(lossless=lossless)(
        labels, images=images(300), categories=[{"name": "lesion"}], ids=IdGenerator(seed=2)
    )
    check_exact(document, labels, lossless)
    assert len(document.annotations) == 2


@st.composite
def volumes(draw: st.DrawFn) -> tuple[int, list[Finding]]:
    """A depth of 100 to 600 slices and findings on a few, far apart, with 1 to 5,000 labels.

    Many labels come as a grid of small squares on one slice (a label each), plus large
    findings on distant slices: both the wide bounding box and the many-label walk.
    """
    depth = draw(st.integers(100, 600))
    slices = draw(
        st.lists(st.integers(0, depth - 1), min_size=1, max_size=4, unique=True).map(sorted)
    )
    findings: list[Finding] = []
    label = 0
    for z in slices:
        if draw(st.booleans()):
            size = draw(st.integers(1, SIDE))
            row = draw(st.integers(0, SIDE - size))
            col = draw(st.integers(0, SIDE - size))
            label = label + 1 if draw(st.booleans()) or label == 0 else label
            findings.append(Finding(z, row, col, size, size, label))
        else:
            many = draw(st.integers(1, 5000 - label)) if label < 5000 else 0
            for k in range(many):
                label += 1
                row, col = divmod(k, 73)
                findings.append(Finding(z, row * 7, col * 7, 5, 5, label))
        if label >= 5000:
            break
    return depth, findings


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.data_too_large, HealthCheck.too_slow],
)
@given(volume=volumes(), lossless=st.booleans())
def test_clinical_volumes_format_exactly(volume: tuple[int, list[Finding]], lossless: bool) -> None:
    depth, findings = volume
    labels = paint(depth, findings)
    document = SegmentationStrategy(lossless=lossless)(
        labels, images=images(depth), categories=[{"name": "lesion"}], ids=IdGenerator(seed=3)
    )
    check_exact(document, labels, lossless)

"""An AiCOCO segmentation document as one DICOM Segmentation (PS3.3 A.51), with highdicom.

One segment per drawn category: each displayed category that is no other's supercategory
(``lung`` groups ``left_lung`` and ``right_lung``; the two are the segments), numbered in the
document's order.
An object's pixels go to its most specific category. The masks are the document's own, drawn
from its polygons or RLEs on each source frame, so the SEG equals the AiCOCO answer voxel for
voxel. Models answer thresholded masks, so the SEG is BINARY.
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from aicoco import AiCOCOOutput
from aicoco.masks import polygons_to_mask
from aicoco.models import AiCategory, AiRLE
from aicoco.rle import decode
from gateway.errors import InvalidModelOutput
from gateway.outputs.producer import Producer, declared_code, new_instance
from gateway.outputs.sources import Sources

SERIES_NUMBER = 9101
_DEFAULT_CATEGORY = codes.SCT.Tissue
_DEFAULT_TYPE = codes.SCT.Tissue


def segmentation(document: AiCOCOOutput, sources: Sources, producer: Producer) -> Dataset:
    segments = segment_categories(document)
    number = {category.id: i for i, category in enumerate(segments)}
    images = _frame_order(document, sources)
    position = {image_id: z for z, image_id in enumerate(images)}
    first = sources.instances[0]
    if not segments:
        raise InvalidModelOutput(
            f"model '{producer.model}' answered a segmentation without categories: a SEG needs "
            "at least one segment",
            details={"model": producer.model},
        )
    shape = (len(images), int(first.Rows), int(first.Columns), len(segments))
    masks = np.zeros(shape, dtype=bool)
    category_of = object_categories(document)
    for annotation in document.annotations:
        category = category_of[annotation.object_id]
        if category is None or category.id not in number or annotation.segmentation is None:
            continue
        z = position[annotation.image_id]
        masks[z, :, :, number[category.id]] |= _mask(annotation.segmentation, shape[1:3])
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=i + 1,
            segment_label=category.name,
            segmented_property_category=declared_code(
                category.model_extra or {}, "segmented_property_category", _DEFAULT_CATEGORY
            ),
            segmented_property_type=declared_code(
                category.model_extra or {}, "segmented_property_type", _DEFAULT_TYPE
            ),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=producer.algorithm(),
            display_color=_colour(category),
        )
        for i, category in enumerate(segments)
    ]
    multi_frame = sources.frames[images[0]].number is not None
    return hd.seg.Segmentation(
        source_images=[first] if multi_frame else [sources.frames[i].instance for i in images],
        pixel_array=masks,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        manufacturer_model_name=producer.model,
        software_versions=producer.service_version,
        device_serial_number=producer.model_version,
        content_label="AI_SEGMENTATION",
        content_description=f"{producer.model} {producer.model_version}",
        omit_empty_frames=bool(masks.any()),
        contributing_equipment=[producer.equipment()],
        **new_instance(SERIES_NUMBER, f"AI segmentation: {producer.model}"),
    )


def segment_categories(document: AiCOCOOutput) -> list[AiCategory]:
    """The drawn categories, in the document's order: displayed (``display`` is not false)
    and no other category's supercategory."""
    parents = {c.supercategory_id for c in document.categories if c.supercategory_id}
    return [
        c
        for c in document.categories
        if c.id not in parents and (c.model_extra or {}).get("display") is not False
    ]


def object_categories(document: AiCOCOOutput) -> dict[str, AiCategory | None]:
    """Each object's most specific category (none of its other categories' child), by id."""
    by_id = {c.id: c for c in document.categories}
    found: dict[str, AiCategory | None] = {}
    for obj in document.objects:
        own = [by_id[i] for i in obj.category_ids or () if i in by_id]
        parents = {c.supercategory_id for c in own}
        found[obj.id] = next((c for c in own if c.id not in parents), own[0] if own else None)
    return found


def _frame_order(document: AiCOCOOutput, sources: Sources) -> list[str]:
    """Image ids in source order: the files as sent, or a multi-frame file's frame order."""
    ids = [image.id for image in document.images]
    if sources.frames[ids[0]].number is not None:
        return sorted(ids, key=lambda i: sources.frames[i].number or 0)
    return ids


def _mask(segmentation: list[list[int | float]] | AiRLE, shape: tuple[int, int]) -> np.ndarray:
    if isinstance(segmentation, AiRLE):
        return decode(segmentation)
    return polygons_to_mask(segmentation, shape)


def _colour(category: AiCategory) -> hd.color.CIELabColor | None:
    colour = (category.model_extra or {}).get("color")
    if not isinstance(colour, str) or len(colour) != 7 or not colour.startswith("#"):
        return None
    try:
        red, green, blue = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    except ValueError:
        return None
    return hd.color.CIELabColor.from_rgb(red, green, blue)

"""An AiCOCO document as a Comprehensive 3D SR holding a TID 1500 Measurement Report.

What goes where (PS3.16 TID 1500 and the templates it includes):

- each object with boxes (a detection) -> a TID 1410 Planar ROI group per box: the box as a
  closed POLYLINE in the source frame's pixels (SCOORD), its category as the Finding, its
  confidence and regressions as measurements;
- each image's categories and regressions (classification, regression) -> TID 1501 groups
  whose source image is that frame: one per category found (its Finding), one for the values;
- the series-level ones (``meta``) -> the same groups without a source image;
- nothing found -> one empty group per image, naming it: the model looked and found nothing.

Categories and regressions that declare no code (``finding_type`` on a category, ``concept``
on a regression, as ``{"value", "scheme", "meaning"}``) get a private code of their name.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from aicoco import AiCOCOOutput
from aicoco.models import AiCategory, AiRegression, AiRegressionItem
from gateway.outputs.producer import (
    MANUFACTURER,
    Producer,
    declared_code,
    new_instance,
    private_code,
    ucum,
)
from gateway.outputs.seg import object_categories
from gateway.outputs.sources import Frame, Sources

SERIES_NUMBER = 9102
CONFIDENCE = private_code("confidence")
_PROCEDURES = {"CT": codes.LN.CTUnspecifiedBodyRegion}
_IMAGING_PROCEDURE = Code("363679005", "SCT", "Imaging procedure")


def measurement_report(document: AiCOCOOutput, sources: Sources, producer: Producer) -> Dataset:
    categories = {c.id: c for c in document.categories}
    regressions = {r.id: r for r in document.regressions}
    groups: list[
        hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
        | hd.sr.MeasurementsAndQualitativeEvaluations
    ] = []
    objects = {obj.id: obj for obj in document.objects}
    category_of = object_categories(document)
    for annotation in document.annotations:
        obj = objects[annotation.object_id]
        category = category_of[obj.id]
        frame = sources.frames[annotation.image_id]
        measurements = _measurements(obj.regressions, regressions, producer)
        confidence = (obj.model_extra or {}).get("confidence")
        if isinstance(confidence, int | float):
            measurements.append(
                hd.sr.Measurement(
                    name=CONFIDENCE,
                    value=float(confidence),
                    unit=ucum(None),
                    algorithm_id=producer.sr_algorithm(),
                )
            )
        for n, box in enumerate(annotation.bbox or []):
            groups.append(
                hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                    tracking_identifier=hd.sr.TrackingIdentifier(
                        uid=hd.UID(), identifier=f"{obj.id} box {n + 1}"
                    ),
                    referenced_region=hd.sr.ImageRegion(
                        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
                        graphic_data=_closed_box(box),
                        source_image=_region_source(frame),
                    ),
                    finding_type=_finding(category),
                    algorithm_id=producer.sr_algorithm(),
                    measurements=measurements or None,
                )
            )
    for image in document.images:
        groups += _evaluations(
            f"image {image.id}",
            image.category_ids,
            image.regressions,
            categories,
            regressions,
            producer,
            [_group_source(sources.frames[image.id])],
        )
    groups += _evaluations(
        "series",
        document.meta.category_ids,
        document.meta.regressions,
        categories,
        regressions,
        producer,
        None,
    )
    if not groups:
        # Nothing found is a result too: one group per image says which images the model looked
        # at (TID 1500 needs at least one group, highdicom insists).
        groups = [
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=hd.UID(), identifier=f"image {image.id}: no finding"
                ),
                algorithm_id=producer.sr_algorithm(),
                source_images=[_group_source(sources.frames[image.id])],
            )
            for image in document.images
        ]
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(),
            name=producer.model,
            manufacturer_name=MANUFACTURER,
            model_name=producer.model,
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=_PROCEDURES.get(sources.modality, _IMAGING_PROCEDURE),
        imaging_measurements=groups,
    )
    return hd.sr.Comprehensive3DSR(
        evidence=sources.instances,
        content=report,
        is_complete=True,
        contributing_equipment=[producer.equipment()],
        **new_instance(SERIES_NUMBER, f"AI results: {producer.model}"),
    )


def _evaluations(
    identifier: str,
    category_ids: Sequence[str] | None,
    items: Sequence[AiRegressionItem] | None,
    categories: dict[str, AiCategory],
    regressions: dict[str, AiRegression],
    producer: Producer,
    source: list[hd.sr.SourceImageForMeasurementGroup] | None,
) -> list[hd.sr.MeasurementsAndQualitativeEvaluations]:
    """TID 1501 groups of one image's (or the series') results: one per category found, its
    Finding (a group holds one), and one holding the values."""

    def group(
        name: str, finding: Code | None, measurements: list[hd.sr.Measurement] | None
    ) -> hd.sr.MeasurementsAndQualitativeEvaluations:
        return hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=name),
            finding_type=finding,
            algorithm_id=producer.sr_algorithm(),
            measurements=measurements,
            source_images=source,
        )

    groups = [
        group(f"{identifier} {categories[i].name}", _finding(categories[i]), None)
        for i in category_ids or ()
        if i in categories
    ]
    measurements = _measurements(items, regressions, producer)
    if measurements:
        groups.append(group(f"{identifier} values", None, measurements))
    return groups


def _measurements(
    items: Sequence[AiRegressionItem] | None,
    regressions: dict[str, AiRegression],
    producer: Producer,
) -> list[hd.sr.Measurement]:
    found = []
    for item in items or ():
        regression = regressions.get(item.regression_id)
        if regression is None:
            continue
        extra = regression.model_extra or {}
        found.append(
            hd.sr.Measurement(
                name=declared_code(extra, "concept", private_code(regression.name)),
                value=float(item.value),
                unit=ucum(extra.get("unit")),
                algorithm_id=producer.sr_algorithm(),
            )
        )
    return found


def _finding(category: AiCategory | None) -> Code:
    if category is None:
        finding: Code = codes.DCM.Finding
        return finding
    return declared_code(category.model_extra or {}, "finding_type", private_code(category.name))


def _closed_box(box: Sequence[float]) -> np.ndarray:
    """AiCOCO's ``[x1, y1, x2, y2]`` (pixel edges) as a closed polyline of (column, row)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2], [x1, y1]], dtype=np.float32)


def _region_source(frame: Frame) -> hd.sr.SourceImageForRegion:
    numbers = None if frame.number is None else [frame.number]
    return hd.sr.SourceImageForRegion.from_source_image(frame.instance, numbers)


def _group_source(frame: Frame) -> hd.sr.SourceImageForMeasurementGroup:
    numbers = None if frame.number is None else [frame.number]
    return hd.sr.SourceImageForMeasurementGroup.from_source_image(frame.instance, numbers)

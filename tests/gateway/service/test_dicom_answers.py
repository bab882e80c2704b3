"""DICOM answers at the HTTP layer, with a stub pipeline (the real models: tests/e2e)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import highdicom as hd
import pydicom
import pytest

from aicoco import AiCOCOOutput
from gateway.app import create_app
from gateway.outputs.seg import segment_categories
from gateway.schemas import ModelInfo
from gateway.settings import Settings
from tests.factories import pydicom_file
from tests.gateway.service.test_app import Catalog, EchoPipeline, TritonHealth, serving

pytestmark = pytest.mark.anyio


class Undescribed(Catalog):
    """A catalog that serves a model it does not list (as a custom pipeline may)."""

    async def describe(self) -> list[ModelInfo]:
        return []


async def test_a_model_the_catalog_does_not_list_still_gets_an_sr(tmp_path: Path) -> None:
    settings = Settings(upload_dir=tmp_path, cpu_workers=1)
    app = create_app(
        settings, triton=TritonHealth(), catalog=Undescribed({"custom": EchoPipeline()})
    )
    ct = pydicom_file("CT_small.dcm").read_bytes()
    async with serving(app) as client:
        response = await client.post(
            "/models/custom/invocations?output=dicom",
            files=[("files", ("ct.dcm", ct))],
            data={"images": json.dumps([{"id": "a", "file_name": "ct.dcm", "index": 0}])},
        )
    assert response.status_code == 200, response.text
    report = pydicom.dcmread(io.BytesIO(response.content))
    assert report.Modality == "SR"
    (equipment,) = [
        e for e in report.ContributingEquipmentSequence if e.Manufacturer == "aicoco-gateway"
    ]
    assert equipment.ManufacturerModelName == "custom"
    content = hd.sr.Comprehensive3DSR.from_dataset(report).content
    assert isinstance(content, hd.sr.MeasurementReport)
    (group,) = content.get_image_measurement_groups()
    assert group.tracking_identifier == "image a: no finding"
    assert group.finding_type is None and not group.get_measurements()
    (source,) = group.source_images
    assert source.referenced_sop_instance_uid == pydicom.dcmread(io.BytesIO(ct)).SOPInstanceUID


def test_segments_are_the_displayed_leaf_categories() -> None:
    document = AiCOCOOutput.model_validate(
        {
            "images": [{"id": "i", "file_name": "a.dcm", "index": 0}],
            "categories": [
                {"id": "lung", "name": "lung"},
                {"id": "left", "name": "left_lung", "supercategory_id": "lung"},
                {"id": "right", "name": "right_lung", "supercategory_id": "lung"},
                {"id": "hidden", "name": "background", "display": False},
            ],
        }
    )
    assert [c.name for c in segment_categories(document)] == ["left_lung", "right_lung"]

"""The throughput bench compares like with like: its in-process baseline answers the gateway's
document for the same PNG, byte for byte once the generated ids are set aside."""

from __future__ import annotations

import io
import json
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from benchmarks.baseline import ROOT, create_baseline_app
from tests.e2e.conftest import StartGateway
from training.phantoms import LUNG_WINDOW, phantom_slice, window_to_uint8
from triton_local import LocalTriton

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

MODEL = "lesion_classifier"


def chest_png(lesions: list[float], seed: int) -> bytes:
    hu = phantom_slice(np.random.default_rng(seed), size=512, lesions=lesions).hu
    buffer = io.BytesIO()
    Image.fromarray(window_to_uint8(hu, *LUNG_WINDOW)).save(buffer, format="PNG")
    return buffer.getvalue()


def without_ids(document: dict[str, Any]) -> str:
    """The document with each generated id replaced by its category's name."""
    names = {category["id"]: category["name"] for category in document["categories"]}
    for category in document["categories"]:
        category["id"] = category["name"]
    for image in document["images"]:
        image["category_ids"] = [names[i] for i in image["category_ids"] or []]
    return json.dumps(document, sort_keys=True)


async def test_the_baseline_answers_the_gateways_document(
    triton: LocalTriton, start_gateway: StartGateway
) -> None:
    url, _ = start_gateway(triton.grpc_url, {})
    images = json.dumps([{"id": "image-1", "file_name": "chest.png", "index": 0}])
    baseline = httpx.ASGITransport(app=create_baseline_app(ROOT / "model_repository" / MODEL))
    async with (
        httpx.AsyncClient(base_url=url, timeout=60) as gateway_client,
        httpx.AsyncClient(transport=baseline, base_url="http://baseline") as baseline_client,
    ):
        answers = []
        for png in (chest_png([14.0], seed=7), chest_png([], seed=8)):
            files = [("files", ("chest.png", png, "image/png"))]
            ours = await gateway_client.post(
                f"/models/{MODEL}/invocations", files=files, data={"images": images}
            )
            theirs = await baseline_client.post(
                "/invocations", files=files, data={"images": images}
            )
            assert ours.status_code == theirs.status_code == 200
            assert without_ids(ours.json()) == without_ids(theirs.json())
            answers.append(ours.json()["images"][0]["category_ids"])
    # One image with a nodule, one without: the comparison covers both answers.
    assert answers[0] and not answers[1]

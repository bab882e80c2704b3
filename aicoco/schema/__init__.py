"""The JSON Schema of the output document, generated from :class:`aicoco.AiCOCOOutput`.

The committed file, ``aicoco_output.schema.json`` next to this module, is what consumers in
other languages validate against; a test fails when it no longer matches the models. Regenerate
it with ``python -m aicoco.schema``.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from aicoco.models import AiCOCOOutput

FILE_NAME = "aicoco_output.schema.json"


def output_schema() -> dict[str, Any]:
    """The schema as the models define it today (serialisation mode: what we write)."""
    schema = AiCOCOOutput.model_json_schema(mode="serialization")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def render(schema: dict[str, Any]) -> str:
    """The committed file's exact text, so that regeneration gives stable diffs."""
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def committed_schema() -> dict[str, Any]:
    """The schema shipped with the package."""
    text = resources.files(__name__).joinpath(FILE_NAME).read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded

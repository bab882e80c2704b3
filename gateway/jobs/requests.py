"""What a job was submitted with, kept in its row as JSON until it runs: the form of an upload
(its fields' text and where each file lies in the job's input folder) or the DICOMweb
invocation. The runner rebuilds the request from it and validates it again, as the route did.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gateway.inference import Upload
from gateway.outputs.choice import Output
from gateway.schemas import PacsInvocation
from gateway.uploads import Form


def files_request(form: Form, output: Output) -> str:
    uploads = [
        {
            "file_name": upload.file_name,
            "name": upload.path.name,
            "size": upload.size,
            "content_type": upload.content_type,
        }
        for upload in form.uploads.values()
    ]
    return json.dumps({"output": output.value, "fields": form.fields, "uploads": uploads})


def form_of(request: str, folder: Path) -> tuple[Form, Output]:
    """The form as the route received it, its files in ``folder``, and the output asked for."""
    saved: dict[str, Any] = json.loads(request)
    uploads = {
        entry["file_name"]: Upload(
            file_name=entry["file_name"],
            path=folder / entry["name"],
            size=entry["size"],
            content_type=entry["content_type"],
        )
        for entry in saved["uploads"]
    }
    return Form(fields=saved["fields"], uploads=uploads), Output(saved["output"])


def dicomweb_request(asked: PacsInvocation) -> str:
    return asked.model_dump_json()


def invocation_of(request: str) -> PacsInvocation:
    return PacsInvocation.model_validate_json(request)

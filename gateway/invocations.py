"""``POST /invocations`` and ``POST /models/{name}/invocations``: files in, the model's answer out.

The model is looked up first, so that a large upload to a wrong name is refused before its body
is read. Then the intake of :mod:`gateway.intake` (body, fields, pairing), the sources of a DICOM
answer (checked before the request waits for a slot), and the run of :mod:`gateway.runner`.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from aicoco import AiCOCOOutput
from gateway import __version__
from gateway.auth import audit
from gateway.inference import Document
from gateway.intake import build_request, check_headers, receive_form, upload_folder
from gateway.outputs.choice import DICOM_MEDIA_TYPE, Output, producer_of, requested, resolve
from gateway.outputs.sources import load_sources
from gateway.readers.tables import TableLimits
from gateway.runner import Run
from gateway.service import model_info, service_of


async def invoke(request: Request) -> Response:
    service = service_of(request)
    settings = service.settings
    model_name: str = request.path_params.get("name", settings.default_model)
    boundary = check_headers(request)
    wanted = requested(request.query_params.get("output"), request.headers.get("accept"))
    catalog = service.catalog
    # The model first, so that a large upload to a wrong name is refused before it is read.
    await catalog.pipeline(model_name)
    answer, producer = Output.AICOCO, None
    if wanted is not Output.AICOCO:
        info = await model_info(catalog, model_name)
        answer, producer = resolve(wanted, model_name, info.task), producer_of(info, __version__)

    run = Run(service, model_name)
    record = audit(request)
    record["model"] = model_name
    with upload_folder(settings.upload_dir) as folder:
        form = await receive_form(request, boundary, folder)
        record.update(files=len(form.uploads), bytes=form.upload_bytes)
        inference = build_request(
            form,
            request_id=request.state.request_id,
            model_name=model_name,
            observe=run.observe,
            table_limits=TableLimits.of(settings),
        )
        # A DICOM answer references its sources: checked before the request waits for a slot.
        sources = None
        if producer is not None:
            sources = await service.cpu.run(
                load_sources, inference.images, inference.uploads, answer.value
            )
        run.parsed()

        async def respond(output: Document) -> bytes:
            if sources is None or producer is None:
                return await service.cpu.run(output.to_json_bytes)
            assert isinstance(output, AiCOCOOutput), "resolve() refused other tasks"
            from gateway.outputs.writer import dicom_file  # see gateway.outputs.choice

            result = await service.cpu.run(dicom_file, answer, output, sources, producer)
            return result.content

        body = await run(request.receive, inference, respond)
    if producer is None:
        return Response(body, media_type="application/json")
    disposition = f'attachment; filename="{model_name}-{answer.value}.dcm"'
    return Response(body, media_type=DICOM_MEDIA_TYPE, headers={"Content-Disposition": disposition})

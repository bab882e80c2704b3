"""``InferAPP``: FLaVor's service entry point, serving its model class through the gateway.

``InferAPP(infer_function=MyModel(), input_data_model=..., output_data_model=...).run(port=...)``
serves ``MyModel`` as the default model (``POST /invocations``; every other model of the Triton
stays reachable at ``/models/{name}/invocations``). The model's network is the
:class:`~gateway.flavor.TritonSession` that its ``define_inference_network`` returns; its name
is the model's name in Triton. With ``TRITON_URL`` set the gateway serves against that Triton;
without, it starts a local Triton on the repository's ``model_repository/`` first, as
``make run`` does. Every other setting comes from the environment, as for ``python -m gateway``;
``port`` and ``host`` given to ``run`` win over ``PORT`` and ``HOST``.
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from gateway.flavor.adapter import FlavorPipeline
from gateway.flavor.models import INPUT_KINDS, BaseAiCOCOInferenceModel
from gateway.flavor.network import TritonSession
from gateway.pipelines.base import PipelineBinding
from gateway.settings import Settings, SettingsError


class InferAPP:
    def __init__(
        self,
        infer_function: BaseAiCOCOInferenceModel,
        input_data_model: type[BaseModel] | None = None,
        output_data_model: type[BaseModel] | None = None,
        records_output_dir: str | None = None,
        records_href_prefix: str | None = None,
    ) -> None:
        if not isinstance(infer_function, BaseAiCOCOInferenceModel):
            raise TypeError(
                "InferAPP serves a subclass of gateway.flavor.BaseAiCOCOImageInferenceModel, "
                "BaseAiCOCOTabularInferenceModel or BaseAiCOCOHybridInferenceModel, got "
                f"{type(infer_function).__name__}"
            )
        kind = INPUT_KINDS.get(input_data_model) if input_data_model is not None else None
        if input_data_model is not None and kind is not None and kind != infer_function.kind:
            raise TypeError(
                f"input_data_model {input_data_model.__name__} is for {kind} models, but "
                f"{type(infer_function).__name__} is a {infer_function.kind} model"
            )
        sessions = [v for v in vars(infer_function).values() if isinstance(v, TritonSession)]
        if len({session.model_name for session in sessions}) != 1:
            raise TypeError(
                f"{type(infer_function).__name__}.define_inference_network must return "
                'TritonSession("<model name in Triton>") (found '
                f"{len(sessions)} Triton models on the instance)"
            )
        self.model = infer_function
        self.model_name = sessions[0].model_name
        self.records_output_dir = records_output_dir
        del output_data_model, records_href_prefix  # the kind decides; hrefs are the gateway's

    def settings(self, port: int | None = None, host: str | None = None) -> Settings:
        settings = replace(Settings.from_env(), default_model=self.model_name)
        if port is not None:
            settings = replace(settings, port=int(port))
        if host is not None:
            settings = replace(settings, host=host)
        if self.records_output_dir is not None:
            settings = replace(settings, records_dir=Path(self.records_output_dir))
        return settings

    def pipelines(self) -> dict[str, Any]:
        model = self.model

        def build(binding: PipelineBinding) -> FlavorPipeline:
            return FlavorPipeline(model, binding)

        return {self.model_name: build}

    def run(self, host: str | None = None, port: int | None = None, **_: Any) -> None:
        """Serve until Ctrl-C or SIGTERM (FLaVor's ``log_level`` is ``LOG_LEVEL`` here)."""
        from gateway.launch import DEFAULT_REPOSITORY, RUN_DIR, run_local, serve

        try:
            settings = self.settings(port, host)
            if os.environ.get("TRITON_URL", "").strip():
                serve(settings, self.pipelines())
                return
            code = run_local(settings, DEFAULT_REPOSITORY, RUN_DIR, self.pipelines())
        except SettingsError as exc:
            print(f"configuration error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        if code:
            raise SystemExit(code)

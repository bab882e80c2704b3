"""Prometheus metrics, one registry per app, summed over the workers when there are several.

A registry per app (rather than the process-global default) lets tests and benchmarks create
many apps in one process without "duplicated timeseries" errors, and keeps ``/metrics`` to what
this gateway measured. With ``WORKERS`` above 1 the server sets :data:`MULTIPROCESS_DIR` before
the workers start: prometheus_client then keeps every value in a file there, and ``/metrics``
from any worker reads them all (counters and histograms summed, the gauges of live workers
summed), so a scrape sees the whole service whichever worker answers it.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
"""The environment variable prometheus_client reads, at import, for its multiprocess mode."""

STAGES = ("parse", "read", "preprocess", "triton", "postprocess", "format")

# From a 2D classification on a GPU (milliseconds) to a large CT series on a CPU (minutes).
_STAGE_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "gateway_requests",
            "HTTP requests answered, by route template, method and status.",
            ("route", "method", "status"),
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "gateway_request_duration_seconds",
            "Time from the request's arrival to the end of its response, by route template.",
            ("route",),
            buckets=_STAGE_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "gateway_errors",
            "Error responses by their stable error code.",
            ("code",),
            registry=self.registry,
        )
        self.stage_seconds = Histogram(
            "gateway_stage_duration_seconds",
            "Time in each stage of an inference request, by stage and model (parse includes "
            "receiving the upload; format, building and serialising the AiCOCO answer).",
            ("stage", "model"),
            buckets=_STAGE_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "gateway_in_flight_requests",
            "Inference requests holding a slot now (bounded by MAX_IN_FLIGHT per worker).",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.queue_depth = Gauge(
            "gateway_queue_depth",
            "Requests with a fully read body waiting for an inference slot (bounded by MAX_QUEUE "
            "per worker).",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.queue_wait_seconds = Histogram(
            "gateway_queue_wait_seconds",
            "Time from a request's body being read to its getting an inference slot (or giving "
            "up after QUEUE_TIMEOUT_S).",
            buckets=_STAGE_BUCKETS,
            registry=self.registry,
        )
        self.uploads = Gauge(
            "gateway_uploads_in_progress",
            "Request bodies being received now (bounded by MAX_UPLOADS per worker).",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.upload_timeouts = Counter(
            "gateway_upload_timeouts",
            "Uploads cut off with 408 for stalling or arriving below UPLOAD_MIN_RATE.",
            registry=self.registry,
        )
        self.progress_units = Counter(
            "gateway_progress_units",
            "Units of long work done by inference requests (slices of a series read, a "
            "volumetric model's patches, each with its mirrorings), by model and unit.",
            ("model", "unit"),
            registry=self.registry,
        )
        self.jobs_submitted = Counter(
            "gateway_jobs_submitted",
            "Jobs queued by this gateway, by kind (files, dicomweb).",
            ("kind",),
            registry=self.registry,
        )
        self.job_runs = Counter(
            "gateway_job_runs",
            "Jobs started by this gateway, by model; a job queued again after its gateway "
            "stopped is started twice, on whichever gateway takes it.",
            ("model",),
            registry=self.registry,
        )
        self.jobs_ended = Counter(
            "gateway_jobs_ended",
            "Jobs ended by this gateway, by state (succeeded, failed, cancelled).",
            ("state",),
            registry=self.registry,
        )
        self.upload_bytes = Counter(
            "gateway_upload_bytes",
            "Bytes of uploaded files received by inference requests.",
            registry=self.registry,
        )

    def progressed(self, model: str, unit: str, units: int) -> None:
        self.progress_units.labels(model=model, unit=unit).inc(units)

    def observe_stage(self, model: str, stage: str, seconds: float) -> None:
        self.stage_seconds.labels(stage=stage, model=model).observe(seconds)

    def render(self) -> bytes:
        folder = os.environ.get(MULTIPROCESS_DIR)
        if not folder:
            return generate_latest(self.registry)
        every_worker = CollectorRegistry()
        multiprocess.MultiProcessCollector(every_worker, path=folder)
        return generate_latest(every_worker)

"""Jobs: long work off the request. A job is a validated request whose answer is stored instead
of sent, run later through the same runner, queue and pipelines as ``POST /invocations``.

- :mod:`~gateway.jobs.store`: the ``jobs`` table (SQLite under ``JOBS_DIR``, or PostgreSQL for
  several gateways), every change one atomic statement: a job runs exactly once.
- :mod:`~gateway.jobs.files`: a job's inputs and result under ``JOBS_DIR``, written in the
  order that makes a kill harmless.
- :mod:`~gateway.jobs.board`: what the routes ask (submit, find, cancel), with key isolation.
- :mod:`~gateway.jobs.worker`: ``JOB_WORKERS`` loops per process taking a slot, then a job.
- :mod:`~gateway.jobs.upkeep`: leases of dead gateways, retention, what a kill left behind.
- :mod:`~gateway.jobs.callbacks`: the signed callback, only to allowed hosts, retried.
- :mod:`~gateway.jobs.requests`, :mod:`~gateway.jobs.status`, :mod:`~gateway.jobs.ids`: what a
  job was submitted with, how it is shown, its id.

The HTTP side is :mod:`gateway.routes.jobs`; ``docs/jobs.md`` is the manual.
"""

# The gateway image: the Starlette service alone. The network runs in Triton (compose.yaml), so
# neither ONNX Runtime nor any CUDA library belongs here: the image installs `.[gateway]` only.
#
# Two stages. `build` installs the project and its dependencies into a virtual environment;
# `runtime` copies that environment alone, so pip's state, the sources and the build backend never
# ship. Every dependency installs from a binary wheel, so no compiler is needed in either stage.
#
# Build from the repository root: docker build -f docker/gateway.Dockerfile .

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore

RUN python -m venv /opt/venv
WORKDIR /src

# Dependencies first, from the project metadata alone (with empty package folders), so that a
# change to the code reuses this layer instead of downloading every wheel again.
COPY pyproject.toml README.md LICENSE ./
RUN mkdir aicoco gateway \
 && /opt/venv/bin/pip install --only-binary=:all: --no-binary=aicoco-gateway ".[gateway]"

# Then the code itself, installed (not copied) so that package data such as aicoco's JSON Schema
# lands where importlib.resources finds it. Importing the app once makes a module missing from the
# installed package fail the build instead of the container.
COPY aicoco/ aicoco/
COPY gateway/ gateway/
RUN /opt/venv/bin/pip install --no-deps --force-reinstall . \
 && /opt/venv/bin/python -c "import aicoco, gateway.app"


FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="aicoco-gateway" \
      org.opencontainers.image.description="AiCOCO inference gateway in front of Triton Inference Server" \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed, unprivileged UID: files the gateway writes (uploads under /tmp) and any volume an
# operator mounts can be owned by a known number rather than by whatever useradd picked.
# /records: the records artifacts of tabular answers; a named volume mounted there starts with
# this folder's owner, so the gateway can write to it.
RUN groupadd --system --gid 10001 gateway \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin gateway \
 && mkdir /records && chown 10001:10001 /records

COPY --from=build /opt/venv /opt/venv
COPY docker/healthcheck.py /opt/gateway/healthcheck.py

# The .pyc files were compiled at install time: nothing needs writing at run time, so the root
# filesystem can be mounted read-only (compose.yaml does).
# GLIBC_TUNABLES: a fixed mmap threshold, so that freed pixel arrays go back to the system
# instead of staying in the heap, and two malloc arenas instead of eight per core. Measured by
# `make soak` (docs/operations.md): about 45 % less memory, and most of its growth gone.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GLIBC_TUNABLES=glibc.malloc.mmap_threshold=131072:glibc.malloc.arena_max=2 \
    PORT=9111 \
    HOST=0.0.0.0

# `python -m` puts the working directory on sys.path: a root-owned folder, never the writable /tmp.
WORKDIR /opt/gateway
USER 10001:10001
EXPOSE 9111

# Liveness only: the image does not know where Triton is. compose.yaml checks readiness instead.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "/opt/gateway/healthcheck.py", "/health/live"]

CMD ["python", "-m", "gateway", "serve"]

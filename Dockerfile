# syntax=docker/dockerfile:1
# The modelreg image: `modelreg serve` with CPU PyTorch and ONNX Runtime, as a non-root user.
#   docker build -t modelreg:0.1.0 .
# No Docker engine runs on the project's own machines, so this file is parsed and checked there
# (scripts/check_deploy: stages, non-root user, health check, pinned torch) but never built.
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/modelreg
WORKDIR /src
# Dependencies before sources, so their layer survives code edits. PyTorch comes from its CPU-only
# index at the version constraints.txt pins: PyPI's default torch is a multi-GB CUDA build.
COPY constraints.txt ./
RUN /opt/modelreg/bin/pip install --index-url https://download.pytorch.org/whl/cpu -c constraints.txt torch
COPY pyproject.toml README.md ./
COPY modelreg/ modelreg/
COPY registry/ registry/
COPY plugins/ plugins/
COPY serving/ serving/
COPY api/ api/
COPY migrations/ migrations/
# A wheel install (not editable): the image holds one `modelreg` package and no checkout. ONNX
# Runtime's CPU build here; the `onnx` extra names the GPU build for machines with CUDA.
RUN /opt/modelreg/bin/pip install -c constraints.txt ".[torch,s3]" "onnxruntime>=1.18" "onnx>=1.16" \
 && /opt/modelreg/bin/modelreg --help > /dev/null

FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
RUN groupadd --system --gid 10001 modelreg \
 && useradd --system --uid 10001 --gid modelreg --home-dir /var/lib/modelreg --shell /usr/sbin/nologin modelreg \
 && install -d -o modelreg -g modelreg /var/lib/modelreg
COPY --from=build /opt/modelreg /opt/modelreg
ENV PATH=/opt/modelreg/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MODELREG_DATA_DIR=/var/lib/modelreg
# The embedded default (SQLite, local artifacts) keeps its data here; a fleet keeps nothing here
# but the bounded local copy of artifacts fetched from S3.
VOLUME ["/var/lib/modelreg"]
WORKDIR /var/lib/modelreg
USER 10001:10001
EXPOSE 8000
# /livez answers while the process serves requests (never waits on the database or Redis).
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 \
  CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/livez', timeout=2)"]
ENTRYPOINT ["modelreg"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]

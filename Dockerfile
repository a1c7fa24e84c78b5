# syntax=docker/dockerfile:1
# Production image of a qastream worker (and of the one-shot `qastream db-upgrade`).
#
# The base image is pinned by tag.  Production should pin it by digest as well, so a
# re-pushed tag cannot change what is built:
#   FROM python:3.11.7-slim-bookworm@sha256:<digest from `docker buildx imagetools inspect`>
FROM python:3.11.7-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A fixed uid/gid so volumes and runAsNonRoot policies can refer to it.
RUN groupadd --system --gid 10001 qastream \
    && useradd --system --uid 10001 --gid qastream --create-home --home-dir /home/qastream qastream

# torch first, from the CPU-only index: installed later as a dependency of the
# project, pip would fetch the default CUDA build (several GB of unused GPU
# libraries).  `pip install .` then finds torch==2.13.0 (2.13.0+cpu) satisfied.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

# Only what the package build needs; README.md* matches nothing if there is no
# README (setuptools then only warns about the long description).
WORKDIR /src
COPY setup.cfg pyproject.toml README.md* ./
COPY qastream ./qastream
# No extras: no test tools and no smollm2 (production talks to a real Ollama
# server).  The source is removed so the installed package is the only copy.
RUN pip install . && cd / && rm -rf /src

WORKDIR /app
# Worker state (Faust data dirs) lives under /app/var, writable by the worker.
RUN mkdir -p /app/var && chown -R qastream:qastream /app
ENV QASTREAM_DATA_DIR=/app/var

USER qastream:qastream

EXPOSE 6066

# Liveness.  The API binds to QASTREAM_WEB_HOST (127.0.0.1 by default, a service
# name under docker compose), so the probe asks that address rather than a fixed
# loopback.  A refused connection raises; 200, or 401 when QASTREAM_AUTH=required
# and the probe has no key, means the worker answers; anything else is unhealthy.
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import http.client, os; c = http.client.HTTPConnection(os.environ.get('QASTREAM_WEB_HOST', '127.0.0.1'), int(os.environ.get('QASTREAM_WEB_PORT', '6066')), timeout=8); c.request('GET', '/metrics'); raise SystemExit(c.getresponse().status not in (200, 401))"]

CMD ["qastream", "worker", "-l", "info"]

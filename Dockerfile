# comfyui-agent with a pinned ComfyUI release, for GPU containers (Function Compute, ...).
# Build: docker build -t comfyui-agent .   (needs internet; the CUDA torch wheels are large)
# Run:   docker run --gpus all -p 9000:9000 comfyui-agent
#
# Models, custom nodes and task state belong on shared storage, not in the image: mount a
# volume at /mnt/auto (Function Compute's NAS mount point) and the entrypoint links
# /mnt/auto/comfyui/{models,custom_nodes,input,output} into ComfyUI and keeps task records
# in /mnt/auto/comfyui/tasks.

ARG PYTHON_VERSION=3.11
ARG COMFYUI_REF=v0.3.64

FROM python:${PYTHON_VERSION}-slim AS comfyui-source
ARG COMFYUI_REF
RUN apt-get update && apt-get install -y --no-install-recommends git ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN git clone --depth 1 --branch "${COMFYUI_REF}" https://github.com/Comfy-Org/ComfyUI.git /comfyui \
    && rm -rf /comfyui/.git

FROM python:${PYTHON_VERSION}-slim
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    COMFYUI_DIR=/comfyui \
    COMFYUI_ARGS="--disable-auto-launch --disable-api-nodes"
RUN apt-get update && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 tini \
    && rm -rf /var/lib/apt/lists/*

COPY --from=comfyui-source /comfyui /comfyui
# torch first: ComfyUI's requirements name a bare `torch`; PyPI's wheels carry CUDA.
RUN pip install torch torchvision torchaudio \
    && pip install -r /comfyui/requirements.txt

COPY pyproject.toml README.md /agent/
COPY agent /agent/agent
COPY store /agent/store
COPY comfyui /agent/comfyui
RUN pip install /agent

COPY deploy/fc/entrypoint.sh /usr/local/bin/comfyui-agent-entrypoint
RUN chmod +x /usr/local/bin/comfyui-agent-entrypoint

EXPOSE 9000
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s CMD \
    python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9000/healthz', timeout=2).status == 200 else 1)"
# tini reaps orphans and forwards SIGTERM, so the agent's graceful stop runs.
ENTRYPOINT ["tini", "--", "comfyui-agent-entrypoint"]

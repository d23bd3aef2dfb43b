# comfyui-agent with a pinned ComfyUI release, for GPU containers (Function Compute,
# Kubernetes, ...).
# Build: docker build -t comfyui-agent .   (needs internet; the CUDA torch wheels are large)
#        add --build-arg VERSION=... --build-arg REVISION=$(git rev-parse HEAD) for the labels
# Run:   docker run --gpus all -p 9000:9000 comfyui-agent
#
# Models, custom nodes and task state belong on shared storage, not in the image: mount a
# volume at /mnt/auto (Function Compute's NAS mount point) and the entrypoint links
# /mnt/auto/comfyui/{models,custom_nodes,input,output,user} into ComfyUI and keeps task
# records in /mnt/auto/comfyui/tasks. The volume must be writable by APP_UID/APP_GID.

ARG PYTHON_VERSION=3.11
ARG COMFYUI_REF=v0.3.64

FROM python:${PYTHON_VERSION}-slim-bookworm AS comfyui-source
ARG COMFYUI_REF
RUN apt-get update && apt-get install -y --no-install-recommends git ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN git clone --depth 1 --branch "${COMFYUI_REF}" https://github.com/Comfy-Org/ComfyUI.git /comfyui \
    && rm -rf /comfyui/.git

FROM python:${PYTHON_VERSION}-slim-bookworm
ARG COMFYUI_REF
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
# 10003: the uid/gid Function Compute's NAS configuration conventionally uses, so files the
# agent writes on the NAS belong to the NAS user (see deploy/fc/s.yaml).
ARG APP_UID=10003
ARG APP_GID=10003

LABEL org.opencontainers.image.title="comfyui-agent" \
      org.opencontainers.image.description="ComfyUI behind a sidecar agent for serverless GPU platforms: sync, websocket and async runs with shared per-node progress" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.base.name="docker.io/library/python:${PYTHON_VERSION}-slim-bookworm" \
      io.comfyui-agent.comfyui.ref="${COMFYUI_REF}"

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CONSTRAINT=/etc/comfyui-agent/constraints.txt \
    COMFYUI_DIR=/comfyui \
    COMFYUI_ARGS="--disable-auto-launch --disable-api-nodes" \
    HOME=/home/comfyui
RUN apt-get update && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 tini \
    && rm -rf /var/lib/apt/lists/*

# Every pip install below is held to these exact versions (PIP_CONSTRAINT), build
# dependencies included.
COPY constraints.txt /etc/comfyui-agent/constraints.txt

COPY --from=comfyui-source /comfyui /comfyui
# torch first: ComfyUI's requirements name a bare `torch`; PyPI's wheels carry CUDA.
RUN pip install torch torchvision torchaudio \
    && pip install -r /comfyui/requirements.txt

COPY pyproject.toml README.md /agent/
COPY agent /agent/agent
COPY store /agent/store
COPY comfyui /agent/comfyui
RUN pip install /agent && rm -rf /agent

COPY deploy/fc/entrypoint.sh /usr/local/bin/comfyui-agent-entrypoint
RUN chmod 0755 /usr/local/bin/comfyui-agent-entrypoint

# An unprivileged user owns what ComfyUI and the agent write: ComfyUI's folders (and /comfyui
# itself, where the entrypoint swaps folders for NAS links), the home (caches) and /data
# (the task store when no NAS is mounted). The code stays root-owned and read-only to it.
RUN groupadd --gid "${APP_GID}" comfyui \
    && useradd --uid "${APP_UID}" --gid "${APP_GID}" --home-dir /home/comfyui --create-home \
       --shell /usr/sbin/nologin comfyui \
    && mkdir -p /comfyui/models /comfyui/custom_nodes /comfyui/input /comfyui/output \
       /comfyui/temp /comfyui/user /data \
    && chown "${APP_UID}:${APP_GID}" /comfyui \
    && chown -R "${APP_UID}:${APP_GID}" /comfyui/models /comfyui/custom_nodes /comfyui/input \
       /comfyui/output /comfyui/temp /comfyui/user /data
USER ${APP_UID}:${APP_GID}
# The default file store (./data/tasks) lands in /data/tasks.
WORKDIR /

EXPOSE 9000
# Liveness, not readiness: a platform that restarts unhealthy containers must not kill one
# that is loading models or restarting a crashed ComfyUI (/readyz answers 503 meanwhile, for
# minutes with big models); that would only start the load again. /healthz fails when the
# agent itself is wedged; the agent restarts a hung or dead ComfyUI child on its own.
# Traffic gating belongs to /readyz: Kubernetes' readinessProbe, FC's initializer hook.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 CMD \
    python -c "import os,sys,urllib.request as u; sys.exit(0 if u.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('AGENT_PORT', '9000'), timeout=4).status == 200 else 1)"
# tini reaps orphans and forwards SIGTERM, so the agent's graceful stop runs.
STOPSIGNAL SIGTERM
ENTRYPOINT ["tini", "--", "comfyui-agent-entrypoint"]

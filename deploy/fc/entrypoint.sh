#!/bin/sh
# Container entrypoint: link shared NAS folders into ComfyUI when /mnt/auto is mounted,
# then exec the agent (which starts ComfyUI from COMFYUI_DIR as its child).
set -eu

NAS="${AGENT_NAS_DIR:-/mnt/auto/comfyui}"
if [ -d /mnt/auto ]; then
    # The image runs unprivileged: say so at once when the shared volume is not ours.
    if ! mkdir -p "$NAS" 2>/dev/null || [ ! -w "$NAS" ]; then
        echo "comfyui-agent: $NAS is not writable by uid $(id -u) gid $(id -g);" \
            "give the shared directory to that user (FC nasConfig userId/groupId," \
            "Kubernetes fsGroup)" >&2
        exit 1
    fi
    for dir in models custom_nodes input output user; do
        mkdir -p "$NAS/$dir"
        if [ ! -L "$COMFYUI_DIR/$dir" ]; then
            # Keep what the image ships (e.g. ComfyUI's example custom nodes) on first start.
            if [ -d "$COMFYUI_DIR/$dir" ]; then
                cp -rn "$COMFYUI_DIR/$dir/." "$NAS/$dir/" 2>/dev/null || true
                rm -rf "$COMFYUI_DIR/$dir"
            fi
            ln -s "$NAS/$dir" "$COMFYUI_DIR/$dir"
        fi
    done
fi

exec comfyui-agent "$@"

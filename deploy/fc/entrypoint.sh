#!/bin/sh
# Container entrypoint: link shared NAS folders into ComfyUI when /mnt/auto is mounted,
# then exec the agent (which starts ComfyUI from COMFYUI_DIR as its child).
set -eu

NAS="${AGENT_NAS_DIR:-/mnt/auto/comfyui}"
if [ -d /mnt/auto ]; then
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

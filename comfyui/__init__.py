"""Everything that speaks to ComfyUI: child-process supervision, HTTP + websocket client, events."""

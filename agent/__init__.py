"""comfyui-agent: the aiohttp service that runs ComfyUI workflows and reports their progress."""

__version__ = "0.1.0"

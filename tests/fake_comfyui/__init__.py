"""A protocol-faithful fake ComfyUI 0.3.64 for tests (see server.py, cli.py, fixtures.py)."""

"""Run the fake ComfyUI as a script, from any working directory:

    python tests/fake_comfyui/main.py --listen 127.0.0.1 --port 8188 [ComfyUI flags...]

The flags, directories and fault injection are described in cli.py and server.py.
"""

import importlib
import sys
from pathlib import Path

if __name__ == "__main__":
    # Import this folder as the `fake_comfyui` package. The folder itself comes off sys.path,
    # so module names like `server` or `nodes` cannot shadow anything else.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)
    importlib.import_module("fake_comfyui.cli").main()

"""The `comfyui-agent` command: the server (bare options, or `serve`).

Nothing heavy is imported here: the server's modules are loaded only to serve.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "serve":
        args = args[1:]
    from agent.server import main as serve_main

    serve_main(args)


def __getattr__(name: str) -> Any:
    # The server's helpers lived here before the client subcommands; code that imports them
    # from agent.cli (make_backend, serve, comfyui_command) keeps working, loaded on demand.
    if name in ("make_backend", "serve", "comfyui_command"):
        from agent import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    main()

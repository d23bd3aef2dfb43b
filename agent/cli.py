"""The `comfyui-agent` command: the server (bare options, or `serve`) and the client
subcommands `run`, `watch` and `apps`.

Nothing heavy is imported here: the client must start fast, and the server's modules
(aiohttp's web server, the stores, ComfyUI supervision) are loaded only to serve.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

CLIENT_COMMANDS = ("run", "watch", "apps")


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in CLIENT_COMMANDS:
        from agent.client.command import main as client_main

        raise SystemExit(client_main(args))
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

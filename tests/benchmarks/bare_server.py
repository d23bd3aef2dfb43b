"""The reference for read throughput: a bare aiohttp handler that returns fixed JSON bytes.

    python -m tests.benchmarks.bare_server --port P --body PATH [--body PATH ...] [--uvloop]

Serves the n-th body file at ``/n`` (0, 1, ...) with the same Content-Type and task headers
as the agent's answers: the least any aiohttp server can do for such a request, so the
agent's read routes are measured against it side by side.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from aiohttp import web


def make_app(bodies: list[bytes]) -> web.Application:
    """One route per body, answering it as the agent would (JSON, task headers)."""
    app = web.Application()
    headers = {"X-Task-Id": "bench", "X-Task-Status": "succeeded"}
    for index, body in enumerate(bodies):

        async def handler(request: web.Request, body: bytes = body) -> web.Response:
            return web.Response(body=body, content_type="application/json", headers=headers)

        app.router.add_get(f"/{index}", handler)
    return app


def main() -> None:
    """Serve until killed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--body", action="append", required=True, type=Path)
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args()
    app = make_app([path.read_bytes() for path in args.body])
    loop = None
    if args.uvloop:
        import uvloop

        loop = uvloop.new_event_loop()
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None, loop=loop)


if __name__ == "__main__":
    main()

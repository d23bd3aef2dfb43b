"""The agent server: parse settings, start ComfyUI and serve until SIGTERM."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import signal
import sys
from collections.abc import Sequence

from aiohttp import web
from pydantic import ValidationError

from agent.access_log import AgentAccessLogger
from agent.app import create_app
from agent.bootstrap import BootstrapError, ensure_comfyui
from agent.logs import setup_logging
from agent.services import SERVICES
from agent.settings import AgentSettings, parse_settings, settings_error_message
from comfyui.backend import ComfyUIBackend
from comfyui.readiness import AttachedComfyUI
from comfyui.supervisor import ComfyUIProcess

log = logging.getLogger("agent")


def comfyui_command(settings: AgentSettings, comfyui_dir: str, python: str) -> list[str]:
    """The command that starts ComfyUI's main.py on the child port."""
    return [
        python,
        f"{comfyui_dir.rstrip('/')}/main.py",
        "--listen",
        "127.0.0.1",
        "--port",
        str(settings.comfyui_port),
        *settings.comfyui_args,
    ]


async def make_backend(settings: AgentSettings) -> ComfyUIBackend:
    """The ComfyUI to use: attached, the given command, a checkout, or a fetched release."""
    if settings.comfyui_url:
        return AttachedComfyUI(settings.comfyui_base_url)
    if settings.command:
        return ComfyUIProcess(
            command=settings.command,
            base_url=settings.comfyui_base_url,
            hang_timeout=settings.comfyui_hang_timeout,
        )
    python = settings.comfyui_python or sys.executable
    if settings.comfyui_dir is not None:
        comfyui_dir = str(settings.comfyui_dir)
    else:
        installed = await ensure_comfyui(
            settings.bootstrap_dir,
            repository=settings.bootstrap_repository,
            ref=settings.bootstrap_ref,
            torch=settings.bootstrap_torch,
        )
        comfyui_dir, python = str(installed.directory), settings.comfyui_python or installed.python
    return ComfyUIProcess(
        command=comfyui_command(settings, comfyui_dir, python),
        base_url=settings.comfyui_base_url,
        cwd=comfyui_dir,
        hang_timeout=settings.comfyui_hang_timeout,
    )


async def serve(settings: AgentSettings) -> None:
    """Run the agent until SIGTERM/SIGINT, then stop gracefully."""
    backend = await make_backend(settings)
    app = create_app(settings, backend)
    # Runs are drained before the server stops (below), so only stragglers meet this bound.
    app_runner = web.AppRunner(
        app,
        access_log=logging.getLogger("aiohttp.access"),
        access_log_class=AgentAccessLogger,
        shutdown_timeout=5.0,
    )
    await app_runner.setup()
    site = web.TCPSite(app_runner, settings.host, settings.port)
    await site.start()
    log.info("listening on %s:%d; ComfyUI at %s", settings.host, settings.port, backend.base_url)
    release_startup_memory()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping: finishing running tasks (grace %g s)", settings.shutdown_grace)
    # Keep listening during the grace period, so new requests get a clear 503.
    await app[SERVICES].runner.shutdown(settings.shutdown_grace)
    await app_runner.cleanup()
    log.info("stopped")


def release_startup_memory() -> None:
    """Hand the heap pages that start-up freed back to the system (glibc only)."""
    # Imports and building the app free blocks in malloc's heap that glibc keeps until told:
    # malloc_trim lowers the idle agent's RSS by about 0.5 MiB. (gc.collect first does not
    # lower it further.)
    if sys.platform != "linux":
        return
    try:
        # The process's own symbols, libc's among them; no library search.
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to trim
        return
    trim(0)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the server with these command-line arguments (default: the process's)."""
    try:
        settings = parse_settings(sys.argv[1:] if argv is None else argv)
    except ValidationError as exc:
        print(f"comfyui-agent: invalid settings:\n{settings_error_message(exc)}", file=sys.stderr)
        raise SystemExit(2) from None
    setup_logging(settings.log_level, settings.log_format)
    try:
        asyncio.run(serve(settings))
    except BootstrapError as exc:
        log.error("could not set up ComfyUI: %s", exc)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()

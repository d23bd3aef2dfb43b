"""Command line of the fake ComfyUI (ComfyUI's own flags); main.py is the script to run.

    python tests/fake_comfyui/main.py --listen 127.0.0.1 --port 8188 \
        [--output-directory D] [--input-directory D] [--temp-directory D] \
        [--preview-method none|auto|latent2rgb|taesd] [--startup-delay S] [--slow-delay S]

Flags of the real ComfyUI that the fake does not know (--cpu, --disable-auto-launch, ...) are
accepted and ignored. Like ComfyUI, --temp-directory D puts temporary files in D/temp and wipes
that folder at start. Without directories, everything goes under a new temporary folder. See
server.py for the routes and the fault injection (/fake/..., --startup-delay).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from aiohttp import web

from .nodes import NodeEnv
from .server import COMFYUI_VERSION, FakeServer

log = logging.getLogger("fake_comfyui")


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description="Fake ComfyUI for tests")
    parser.add_argument("--listen", default="127.0.0.1", nargs="?", const="0.0.0.0")
    parser.add_argument("--port", type=int, default=8188)
    parser.add_argument("--output-directory")
    parser.add_argument("--input-directory")
    parser.add_argument("--temp-directory")
    parser.add_argument(
        "--preview-method", default="none", choices=["none", "auto", "latent2rgb", "taesd"]
    )
    parser.add_argument("--startup-delay", type=float, default=0.0, help="sleep before listening")
    parser.add_argument("--slow-delay", type=float, default=0.2, help="SlowCounter default delay")
    return parser.parse_known_args(argv)


def _directories(args: argparse.Namespace) -> tuple[NodeEnv, Path | None]:
    """NodeEnv plus the temporary base folder to delete on exit, if the fake made one."""
    given = (args.output_directory, args.input_directory, args.temp_directory)
    made = None if all(given) else Path(tempfile.mkdtemp(prefix="fake-comfyui-"))

    def pick(flag: str | None, default: str) -> Path:
        if flag:
            return Path(flag).resolve()
        assert made is not None
        return made / default

    output, inputs = pick(args.output_directory, "output"), pick(args.input_directory, "input")
    temp = pick(args.temp_directory, "") / "temp"
    shutil.rmtree(temp, ignore_errors=True)  # ComfyUI empties its temp folder at start
    for folder in (output, inputs, temp):
        folder.mkdir(parents=True, exist_ok=True)
    env = NodeEnv(
        output_dir=output,
        input_dir=inputs,
        temp_dir=temp,
        previews=args.preview_method != "none",
        slow_delay=args.slow_delay,
    )
    return env, made


async def serve(args: argparse.Namespace, env: NodeEnv) -> None:
    fake = FakeServer(env)
    # A short shutdown timeout: open websockets must not hold up Ctrl-C for aiohttp's 60 s
    runner = web.AppRunner(fake.app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    try:
        log.info("Starting server\n")
        hosts = [h.strip() for h in args.listen.split(",") if h.strip()]
        for host in hosts:
            await web.TCPSite(runner, host, args.port).start()
        port = runner.addresses[0][1] if runner.addresses else args.port
        shown = "127.0.0.1" if hosts[0] in ("0.0.0.0", "::") else hosts[0]
        log.info("To see the GUI go to: http://%s:%s", shown, port)
        await asyncio.Event().wait()  # serve until Ctrl-C (or SIGTERM, which kills at once)
    finally:
        await runner.cleanup()


def _die_on_sigterm(made: Path | None) -> None:
    """Like ComfyUI, which installs no SIGTERM handler: die of the signal at once (exit
    status -15 to the parent), after deleting the temporary folder the fake made itself."""

    def handler(signum: int, _frame: object) -> None:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> None:
    args, unknown = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    if unknown:
        log.info("fake ComfyUI: ignoring flags %s", " ".join(unknown))
    env, made = _directories(args)
    _die_on_sigterm(made)
    log.info("Total VRAM 0 MB, total RAM 0 MB (fake)")
    log.info("Device: cpu")
    log.info("Python version: %s", sys.version)
    log.info("ComfyUI version: %s", COMFYUI_VERSION)
    log.info("Setting output directory to: %s", env.output_dir)
    log.info("Setting input directory to: %s", env.input_dir)
    log.info("Setting temp directory to: %s", env.temp_dir)
    if args.startup_delay > 0:
        time.sleep(args.startup_delay)  # a slow boot: not even the port is open yet
    try:
        asyncio.run(serve(args, env))
    except KeyboardInterrupt:
        log.info("\nStopped server")
    finally:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)


if __name__ == "__main__":
    main()

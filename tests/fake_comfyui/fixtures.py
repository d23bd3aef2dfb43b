"""Start the fake ComfyUI as a real subprocess, for tests.

    fake = await start_fake_comfyui(tmp_path, "--slow-delay", "0.02")
    ...  # fake.url, fake.ws_url(client_id), fake.output_dir, fake.input_dir
    await fake.stop()

The process gets its own free loopback port and its own directories under `tmp_path`; its
stdout/stderr go to `fake.log_path`. `start_fake_comfyui` returns once GET /system_stats
answers 200 (pass wait_ready=False to start it without waiting, e.g. for --startup-delay).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

MAIN_SCRIPT = Path(__file__).resolve().with_name("main.py")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class FakeComfyUI:
    """A running fake ComfyUI subprocess."""

    process: asyncio.subprocess.Process
    port: int
    base_dir: Path
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, client_id: str | None = None) -> str:
        query = f"?clientId={client_id}" if client_id else ""
        return f"ws://127.0.0.1:{self.port}/ws{query}"

    @property
    def output_dir(self) -> Path:
        return self.base_dir / "output"

    @property
    def input_dir(self) -> Path:
        return self.base_dir / "input"

    @property
    def temp_dir(self) -> Path:
        """Where PreviewImage writes: like ComfyUI, <--temp-directory>/temp."""
        return self.base_dir / "temp" / "temp"

    def read_log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait_ready(self, timeout: float = 20.0) -> None:
        """Poll GET /system_stats until it answers 200 (the process has no readiness event)."""
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.process.returncode is not None:
                    raise RuntimeError(
                        f"fake ComfyUI exited with {self.process.returncode}:\n{self.read_log()}"
                    )
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with session.get(f"{self.url}/system_stats") as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.05)
        raise TimeoutError(f"fake ComfyUI not ready after {timeout}s:\n{self.read_log()}")

    async def stop(self) -> int | None:
        """Kill the process by PID (SIGKILL) and reap it; returns its exit status."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGKILL)
        return await self.process.wait()


async def start_fake_comfyui(
    tmp_path: Path, *extra_args: str, wait_ready: bool = True, timeout: float = 20.0
) -> FakeComfyUI:
    """Start `main.py` on a free 127.0.0.1 port with directories under tmp_path/fake-<port>."""
    port = free_port()
    base = tmp_path / f"fake-{port}"
    for name in ("output", "input", "temp"):
        (base / name).mkdir(parents=True, exist_ok=True)
    log_path = base / "server.log"
    args = [
        str(MAIN_SCRIPT),
        "--listen",
        "127.0.0.1",
        "--port",
        str(port),
        "--output-directory",
        str(base / "output"),
        "--input-directory",
        str(base / "input"),
        "--temp-directory",
        str(base / "temp"),
        *extra_args,
    ]
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, *args, stdout=log, stderr=asyncio.subprocess.STDOUT, cwd=base
        )
    fake = FakeComfyUI(process, port, base, log_path)
    if wait_ready:
        try:
            await fake.wait_ready(timeout)
        except BaseException:
            await fake.stop()
            raise
    return fake

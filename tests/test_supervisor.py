"""ComfyUI child supervision: readiness, output forwarding, crashes, hangs, stop, attach mode.

The child is a tiny stand-in for ComfyUI written into tmp_path (standard library only):
it serves ``/system_stats`` on a loopback port and misbehaves on request.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from comfyui.backend import ComfyUIBackend
from comfyui.output_lines import LineSplitter
from comfyui.readiness import AttachedComfyUI, StateNotifier
from comfyui.supervisor import ComfyUIProcess

FAKE_COMFYUI = r"""
import argparse, os, signal, subprocess, sys, threading, time
from http.server import BaseHTTPRequestHandler, HTTPServer

p = argparse.ArgumentParser()
p.add_argument("--port", type=int, required=True)
p.add_argument("--ready-delay", type=float, default=0.0)
p.add_argument("--never-ready", action="store_true")
p.add_argument("--exit-after", type=float)
p.add_argument("--exit-code", type=int, default=3)
p.add_argument("--hang-after", type=float)
p.add_argument("--ignore-term", action="store_true")
p.add_argument("--grandchild", action="store_true")
p.add_argument("--big-line", type=int, default=0)
p.add_argument("--once", help="marker file: misbehave only on the run that creates it")
args = p.parse_args()

misbehave = True
if args.once:
    misbehave = not os.path.exists(args.once)
    open(args.once, "a").close()

if args.ignore_term:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

print(f"fake comfyui pid={os.getpid()} starting", flush=True)
print("a line on stderr", file=sys.stderr, flush=True)
if args.big_line:
    sys.stdout.write("B" * args.big_line + "\n")
    print("after the big line", flush=True)
if args.grandchild:
    code = "import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(1000)"
    g = subprocess.Popen([sys.executable, "-c", code])
    print(f"GRANDCHILD {g.pid}", flush=True)

hung = threading.Event()

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if hung.is_set():
            time.sleep(3600)
        if self.path == "/system_stats":
            body = b'{"system": {}, "devices": []}'
            self.send_response(200)
        else:
            body = b"not found"
            self.send_response(404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass

def timer(delay, fn):
    t = threading.Timer(delay, fn)
    t.daemon = True
    t.start()

def die():
    print("exiting now", flush=True)
    os._exit(args.exit_code)

def hang():
    print("hanging now", flush=True)
    hung.set()

def serve():
    time.sleep(args.ready_delay)
    HTTPServer(("127.0.0.1", args.port), Handler).serve_forever()

if misbehave and args.exit_after is not None:
    timer(args.exit_after, die)
if misbehave and args.hang_after is not None:
    timer(args.hang_after, hang)
if not args.never_ready:
    threading.Thread(target=serve, daemon=True).start()
while True:
    time.sleep(1000)
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def reaped(pid: int) -> bool:
    """True when `pid` is not a zombie child of ours (waitpid has nothing to collect)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return not Path(f"/proc/{pid}").exists()
    return False


def dead(pid: int) -> bool:
    """True when `pid` is gone or a zombie (a reparented grandchild may await init)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


def state_of(backend: ComfyUIBackend) -> str:
    """Read the state afresh (keeps mypy from narrowing it across awaits)."""
    return backend.state


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for an outside-world condition (another process' state) with an upper bound."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


class Lines(logging.Handler):
    """Collects forwarded child lines and lets a test await a specific one."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[tuple[float, str]] = []
        self.changed = StateNotifier()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((time.monotonic(), record.getMessage()))
        self.changed.notify()

    @property
    def messages(self) -> list[str]:
        return [m for _, m in self.records]

    def find(self, needle: str) -> tuple[float, str] | None:
        return next((r for r in self.records if needle in r[1]), None)

    async def wait_for(self, needle: str, timeout: float = 10.0) -> tuple[float, str]:
        assert await self.changed.wait_for(lambda: self.find(needle) is not None, timeout), (
            f"no line containing {needle!r}; got {self.messages[-5:]}"
        )
        found = self.find(needle)
        assert found is not None
        return found


class Exits:
    """Records exit-listener calls with the supervisor's state at call time."""

    def __init__(self, sup: ComfyUIProcess) -> None:
        self.sup = sup
        self.calls: list[dict[str, Any]] = []
        self.changed = StateNotifier()
        sup.add_exit_listener(self)

    def __call__(self, code: int | None) -> None:
        self.calls.append(
            {"code": code, "t": time.monotonic(), "ready": self.sup.ready, "state": self.sup.state}
        )
        self.changed.notify()

    async def wait_count(self, n: int, timeout: float = 10.0) -> None:
        assert await self.changed.wait_for(lambda: len(self.calls) >= n, timeout), self.calls


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "fake_comfyui.py"
    path.write_text(FAKE_COMFYUI)
    return path


Factory = Callable[..., tuple[ComfyUIProcess, Lines]]


@pytest.fixture
async def make(script: Path) -> AsyncIterator[Factory]:
    """Build supervisors around the fake child; every one is stopped at teardown."""
    made: list[ComfyUIProcess] = []

    def factory(*args: str, logger: logging.Logger | None = None, **kw: Any) -> Any:
        port = free_port()
        lines = Lines()
        if logger is None:
            logger = logging.getLogger(f"test.comfyui.child.{len(made)}.{port}")
            logger.propagate = False
        logger.setLevel(logging.INFO)
        logger.addHandler(lines)
        options: dict[str, Any] = {"probe_interval": 0.05, "probe_timeout": 1.0}
        options.update(kw)
        sup = ComfyUIProcess(
            command=[sys.executable, str(script), "--port", str(port), *args],
            base_url=f"http://127.0.0.1:{port}",
            logger=logger,
            **options,
        )
        made.append(sup)
        return sup, lines

    yield factory
    for sup in made:
        await sup.stop(grace=1.0)
        for handler in list(sup._child_logger.handlers):
            if isinstance(handler, Lines):
                sup._child_logger.removeHandler(handler)


async def test_start_ready_and_output_forwarded(
    make: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="comfyui.child")
    sup, lines = make("--ready-delay", "0.2", logger=logging.getLogger("comfyui.child"))
    readies: list[float] = []
    sup.add_ready_listener(lambda: readies.append(time.monotonic()))
    assert isinstance(sup, ComfyUIBackend)
    assert sup.state == "idle" and not sup.ready and sup.pid is None

    await sup.start()
    assert state_of(sup) == "starting"
    assert isinstance(sup.pid, int)
    assert sup.started_at is not None and abs(sup.started_at - time.time()) < 60
    assert os.getpgid(sup.pid) == sup.pid  # leads its own process group

    assert await sup.wait_ready(10.0)
    assert sup.ready and sup.state == "ready" and sup.restarts == 0
    assert len(readies) == 1

    await lines.wait_for("starting")
    await lines.wait_for("a line on stderr")
    forwarded = [r.getMessage() for r in caplog.records if r.name == "comfyui.child"]
    assert f"[comfyui] fake comfyui pid={sup.pid} starting" in forwarded
    assert "[comfyui] a line on stderr" in forwarded
    assert all(r.levelno == logging.INFO for r in caplog.records if r.name == "comfyui.child")


async def test_wait_ready_times_out_and_stop_releases_waiters(make: Factory) -> None:
    sup, _ = make("--never-ready")
    assert not await sup.wait_ready(0)  # before start: simply not ready
    await sup.start()
    t0 = time.monotonic()
    assert not await sup.wait_ready(0.3)
    assert time.monotonic() - t0 >= 0.29
    assert sup.state == "starting"

    waiter = asyncio.create_task(sup.wait_ready(60.0))
    await asyncio.sleep(0.05)
    await sup.stop(grace=1.0)
    assert await asyncio.wait_for(waiter, 5.0) is False
    assert state_of(sup) == "stopped"
    assert not await sup.wait_ready(60.0)  # returns at once once stopped


async def test_crash_calls_exit_listener_then_restarts(make: Factory, tmp_path: Path) -> None:
    sup, lines = make(
        "--exit-after", "0.3", "--exit-code", "3", "--once", str(tmp_path / "crashed"),
        restart_backoff_initial=0.05,
    )  # fmt: skip
    exits = Exits(sup)
    await sup.start()
    assert await sup.wait_ready(10.0)
    first_pid = sup.pid
    assert first_pid is not None

    await exits.wait_count(1)
    said_exiting, _ = await lines.wait_for("exiting now")
    call = exits.calls[0]
    assert call["code"] == 3
    assert call["ready"] is False and call["state"] == "restarting"
    assert call["t"] - said_exiting < 1.0
    assert sup.last_exit_code == 3
    assert reaped(first_pid)

    assert await sup.wait_ready(10.0)
    assert sup.restarts == 1
    assert sup.pid is not None and sup.pid != first_pid
    assert len(exits.calls) == 1


async def test_crash_loop_backs_off_exponentially(make: Factory) -> None:
    sup, _ = make(
        "--exit-after", "0", "--exit-code", "7",
        restart_backoff_initial=0.05, restart_backoff_max=0.4,
    )  # fmt: skip
    exits = Exits(sup)
    seen_ready: list[bool] = []
    sup.add_ready_listener(lambda: seen_ready.append(True))
    await sup.start()
    await exits.wait_count(6, timeout=20.0)

    assert all(c["code"] == 7 for c in exits.calls)
    assert sup.restarts >= 5
    assert not seen_ready and not sup.ready
    times = [c["t"] for c in exits.calls]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # Each respawn waits its back-off first, so gaps are lower-bounded deterministically:
    # 0.05, 0.1, 0.2, then capped at 0.4.
    for i, gap in enumerate(gaps):
        assert gap >= min(0.05 * 2**i, 0.4) - 0.01, (i, gaps)
    assert gaps[-1] > gaps[0]


async def test_crash_is_logged_with_exit_code_and_tail(
    make: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="comfyui.supervisor")
    sup, _ = make("--exit-after", "0", "--exit-code", "9", restart_backoff_initial=5.0)
    exits = Exits(sup)
    await sup.start()
    await exits.wait_count(1)
    crash = [
        r for r in caplog.records if r.name == "comfyui.supervisor" and "exited" in r.getMessage()
    ]
    assert crash, caplog.text
    text = crash[0].getMessage()
    assert "exit code 9" in text and "exiting now" in text and "starting" in text
    assert sup.state == "restarting" and sup.pid is None


async def test_sigkill_from_outside_is_detected_and_restarted(make: Factory) -> None:
    sup, _ = make(restart_backoff_initial=0.05)
    exits = Exits(sup)
    await sup.start()
    assert await sup.wait_ready(10.0)
    pid = sup.pid
    assert pid is not None

    os.kill(pid, signal.SIGKILL)
    await exits.wait_count(1, timeout=1.0)
    assert exits.calls[0]["code"] == -signal.SIGKILL
    assert exits.calls[0]["ready"] is False
    assert await sup.wait_ready(10.0)
    assert sup.restarts == 1 and sup.pid != pid
    assert reaped(pid)


async def test_hung_child_is_killed_and_restarted(make: Factory, tmp_path: Path) -> None:
    sup, lines = make(
        "--hang-after", "0.3", "--once", str(tmp_path / "hung"),
        probe_timeout=0.2, hang_timeout=1.0, restart_backoff_initial=0.05,
    )  # fmt: skip
    exits = Exits(sup)
    await sup.start()
    assert await sup.wait_ready(10.0)
    pid = sup.pid
    assert pid is not None
    hung_at, _ = await lines.wait_for("hanging now")

    await exits.wait_count(1, timeout=10.0)
    assert exits.calls[0]["code"] == -signal.SIGKILL
    # Killed only after hang_timeout without an answer (the last answer was before the hang).
    assert exits.calls[0]["t"] - hung_at >= 1.0 - 0.3
    assert await sup.wait_ready(10.0)
    assert sup.restarts == 1
    assert reaped(pid)


async def test_restart_replaces_child_now(make: Factory) -> None:
    sup, _ = make(restart_backoff_initial=30.0)
    exits = Exits(sup)
    await sup.start()
    assert await sup.wait_ready(10.0)
    pid = sup.pid
    assert pid is not None

    await asyncio.wait_for(sup.restart(), 10.0)
    assert sup.restarts == 1
    assert sup.pid is not None and sup.pid != pid
    assert [c["code"] for c in exits.calls] == [-signal.SIGTERM]
    assert await sup.wait_ready(10.0)  # no 30 s back-off for a requested restart
    assert reaped(pid)


async def test_restart_cuts_a_crash_backoff_short(make: Factory, tmp_path: Path) -> None:
    sup, _ = make(
        "--exit-after", "0", "--once", str(tmp_path / "crashed"),
        restart_backoff_initial=30.0,
    )  # fmt: skip
    exits = Exits(sup)

    def broken_listener(code: int | None) -> None:
        raise RuntimeError("listener bug")

    sup.add_exit_listener(broken_listener)  # must not disturb supervision
    await sup.start()
    await exits.wait_count(1)
    assert sup.state == "restarting"  # now sleeping its 30 s back-off

    await asyncio.wait_for(sup.restart(), 10.0)
    assert sup.restarts == 1
    assert await sup.wait_ready(10.0)


async def test_stop_racing_start_leaves_no_child(make: Factory) -> None:
    sup, _ = make()
    starting = asyncio.create_task(sup.start())
    await asyncio.sleep(0)
    await sup.stop(grace=2.0)
    await starting
    assert sup.state == "stopped" and sup.pid is None and not sup.ready
    assert sup.last_exit_code is not None


async def test_stop_terms_then_kills_the_whole_group(make: Factory) -> None:
    sup, lines = make("--ignore-term", "--grandchild")
    exits = Exits(sup)
    await sup.start()
    assert await sup.wait_ready(10.0)
    _, line = await lines.wait_for("GRANDCHILD")
    grandchild = int(line.rsplit(" ", 1)[1])
    pid = sup.pid
    assert pid is not None and not dead(grandchild)

    t0 = time.monotonic()
    await sup.stop(grace=0.5)
    elapsed = time.monotonic() - t0
    assert 0.5 <= elapsed < 5.0  # waited the grace (TERM ignored), then SIGKILL
    assert sup.state == "stopped" and not sup.ready and sup.pid is None
    assert sup.last_exit_code == -signal.SIGKILL
    assert reaped(pid)
    await eventually(lambda: dead(grandchild))
    assert exits.calls == []  # stop() is not an unexpected exit

    t0 = time.monotonic()
    await sup.stop(grace=0.5)  # idempotent
    assert time.monotonic() - t0 < 0.5
    assert sup.state == "stopped"


async def test_stop_is_quick_when_child_honours_term(make: Factory) -> None:
    sup, _ = make()
    await sup.start()
    assert await sup.wait_ready(10.0)
    pid = sup.pid
    assert pid is not None
    t0 = time.monotonic()
    await asyncio.gather(sup.stop(grace=10.0), sup.stop(grace=10.0))
    assert time.monotonic() - t0 < 5.0
    assert sup.last_exit_code == -signal.SIGTERM
    assert reaped(pid)


async def test_two_mib_line_does_not_break_forwarding(make: Factory) -> None:
    sup, lines = make("--big-line", str(2 * 1024 * 1024))
    await sup.start()
    assert await sup.wait_ready(10.0)
    await lines.wait_for("after the big line")
    big = [m for m in lines.messages if m.startswith("[comfyui] BBBB")]
    assert len(big) == 1
    assert len(big[0]) < 70 * 1024
    assert "line truncated" in big[0]


async def test_missing_executable_fails_start(tmp_path: Path) -> None:
    sup = ComfyUIProcess(command=[str(tmp_path / "nope")], base_url="http://127.0.0.1:1")
    with pytest.raises(OSError):
        await sup.start()
    assert sup.state == "stopped"
    await sup.stop()


def test_line_splitter_bounds_and_carriage_returns() -> None:
    out: list[str] = []
    splitter = LineSplitter(out.append, max_bytes=10)
    splitter.feed(b"plain\nwin\r\n")
    splitter.feed(b"step 1\rstep 2\r")
    splitter.feed(b"\nbad \xff byte\n")
    splitter.feed(b"x" * 25)
    splitter.feed(b"y" * 5 + b"\npartial")
    splitter.flush()
    assert out == [
        "plain",
        "win",
        "step 2",
        "bad \ufffd byte",
        "xxxxxxxxxx ... [line truncated, 20 more bytes]",
        "partial",
    ]


async def test_attached_comfyui_follows_a_local_server() -> None:
    async def system_stats(request: web.Request) -> web.Response:
        return web.json_response({"system": {}})

    app = web.Application()
    app.router.add_get("/system_stats", system_stats)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()

    attached = AttachedComfyUI(
        f"http://127.0.0.1:{port}/", probe_interval=0.05, probe_timeout=0.5, unready_after=0.3
    )
    assert isinstance(attached, ComfyUIBackend)
    readies: list[bool] = []
    attached.add_ready_listener(lambda: readies.append(True))
    attached.add_exit_listener(lambda code: pytest.fail("exit listener must never fire"))
    try:
        assert attached.state == "idle"
        await attached.start()
        assert await attached.wait_ready(10.0)
        assert state_of(attached) == "ready" and readies == [True]
        assert attached.restarts == 0 and attached.pid is None
        assert attached.base_url == f"http://127.0.0.1:{port}"

        await runner.cleanup()  # the server goes away: readiness drops after unready_after
        changed = attached._changed
        assert await changed.wait_for(lambda: not attached.ready, 10.0)
        assert state_of(attached) == "starting"
    finally:
        await runner.cleanup()
        await attached.stop()
    await attached.stop()  # idempotent
    assert state_of(attached) == "stopped"
    assert not await attached.wait_ready(60.0)

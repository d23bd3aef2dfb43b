"""A protocol-faithful fake of ComfyUI 0.3.64's HTTP + websocket API, for tests.

It runs real prompts against a small table of fake nodes (see nodes.py) and answers the way
the unmodified server does in the recordings under shared/comfyui-traces: same routes (also
under /api/), same validation errors, same websocket events in the same order to the same
clients, same /history and /queue shapes, real output files. It loads no models and starts in
a fraction of a second.

Faithful quirks worth knowing:
- ComfyUI's origin check (see origin.py): a loopback `Host` with another `Origin` gets an
  empty 403, on every route and websocket; every OPTIONS request gets an empty 200.
- `/` is a small page shaped like ComfyUI's front end: a module script and a stylesheet
  under /assets/ loaded in CORS mode, which open /ws and show progress and output images.
- A websocket opened without ?clientId= gets sid uuid4().hex (no dashes), as ComfyUI does.
- Reusing a clientId replaces that client's socket; when the old socket later closes, the
  client is unregistered (even though the new socket is open), exactly like ComfyUI.
- Only the first text message of a socket can be a feature_flags handshake.
- POST /interrupt is honoured at the running node's next progress step, or when the next node
  starts; a flag left from an earlier prompt is cleared when a prompt starts.
- The order of independent output nodes is reverse prompt order (ComfyUI: hash order).

Fault injection (not part of ComfyUI; routes under /fake/ are exempt from stalls):
- `--startup-delay S`: sleep S seconds before listening (a slow boot).
- `POST /fake/crash`: the process exits at once with status 137, answering nothing.
- `POST /fake/drop-websockets`: abort every websocket's TCP connection (no close frame);
  answers once the server has forgotten those clients.
- `POST /fake/stall?seconds=S`: for S seconds hold every HTTP answer and websocket frame
  (the worker keeps running; its frames are delivered late, in order).
- `GET /fake/clients`: `{"clients": [client ids with an open websocket]}`.
"""

from __future__ import annotations

import asyncio
import copy
import heapq
import json
import logging
import mimetypes
import os
import struct
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from .executor import Outcome, PromptExecutor, QueueItem
from .graph import validate_prompt
from .nodes import NODES, NodeEnv, node_info
from .origin import origin_only

log = logging.getLogger("fake_comfyui")

COMFYUI_VERSION = "0.3.64"
MAX_UPLOAD_SIZE = 100 * 1024 * 1024
SERVER_FEATURES = {"supports_preview_metadata": True, "max_upload_size": MAX_UPLOAD_SIZE}
MAXIMUM_HISTORY_SIZE = 10000
SENSITIVE_EXTRA_DATA_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")
UNSAFE_CONTENT_TYPES = {
    "text/html",
    "text/html-sandboxed",
    "application/xhtml+xml",
    "text/javascript",
    "text/css",
}
# A small page in the shape of ComfyUI's built front end (index.html + /assets/*).
WEB_ROOT = Path(__file__).resolve().with_name("web")

for _ext, _type in (
    (".webp", "image/webp"),
    (".flac", "audio/flac"),
    (".mp4", "video/mp4"),
    (".gif", "image/gif"),
):
    mimetypes.add_type(_type, _ext)


class StallGate:
    """While stalled, HTTP handlers and websocket sends wait."""

    def __init__(self) -> None:
        self._open = asyncio.Event()
        self._open.set()
        self._until = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def stall(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        self._until = max(self._until, loop.time() + seconds)
        self._open.clear()
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(self._until, self._open.set)

    async def wait(self) -> None:
        await self._open.wait()


class Hub:
    """Connected websocket clients and the single ordered outgoing message queue (ComfyUI's
    send_sync + publish_loop), so frames leave in exactly the order they were produced."""

    def __init__(self, gate: StallGate) -> None:
        self.gate = gate
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.metadata: dict[str, dict[str, Any]] = {}
        # per open socket: its TCP transport and an event set once its handler has finished
        self.connections: dict[int, tuple[asyncio.Transport, asyncio.Event]] = {}
        self._queue: asyncio.Queue[tuple[str | int, Any, str | None]] = asyncio.Queue()

    def send_sync(self, event: str | int, data: Any, sid: str | None = None) -> None:
        self._queue.put_nowait((event, data, sid))

    def supports_preview_metadata(self, sid: str | None) -> bool:
        if sid is None:
            return False
        return (
            self.metadata.get(sid, {}).get("feature_flags", {}).get("supports_preview_metadata")
            is True
        )

    async def send(self, event: str | int, data: Any, sid: str | None = None) -> None:
        await self.gate.wait()
        if isinstance(event, int):
            frame = struct.pack(">I", event) + data
            await self._deliver(sid, lambda ws: ws.send_bytes(frame))
        else:
            message = {"type": event, "data": data}
            await self._deliver(sid, lambda ws: ws.send_json(message))

    async def _deliver(
        self, sid: str | None, send: Callable[[web.WebSocketResponse], Awaitable[None]]
    ) -> None:
        if sid is None:
            targets = list(self.sockets.values())
        else:
            targets = [self.sockets[sid]] if sid in self.sockets else []
        for ws in targets:
            try:
                await send(ws)
            except (ConnectionError, aiohttp.ClientError, RuntimeError) as ex:
                log.warning("send error: %s", ex)

    async def publish_loop(self) -> None:
        while True:
            event, data, sid = await self._queue.get()
            await self.send(event, data, sid)

    async def drop_all(self) -> None:
        """Abort every socket's connection and wait until their handlers have unregistered."""
        connections = list(self.connections.values())
        for transport, _ in connections:
            transport.abort()
        waits = [asyncio.create_task(done.wait()) for _, done in connections]
        if waits:
            await asyncio.wait(waits, timeout=5)


class PromptQueue:
    """Pending heap, running items and history, shaped like ComfyUI's PromptQueue."""

    def __init__(self, on_change: Callable[[], None]) -> None:
        self.on_change = on_change
        self.pending: list[QueueItem] = []
        self.running: dict[int, QueueItem] = {}
        self.history: dict[str, dict[str, Any]] = {}
        self._task_counter = 0
        self._wakeup = asyncio.Event()

    def put(self, item: QueueItem) -> None:
        heapq.heappush(self.pending, item)
        self.on_change()
        self._wakeup.set()

    async def get(self) -> tuple[QueueItem, int]:
        while not self.pending:
            self._wakeup.clear()
            await self._wakeup.wait()
        item = heapq.heappop(self.pending)
        item_id = self._task_counter
        self._task_counter += 1
        self.running[item_id] = copy.deepcopy(item)
        self.on_change()
        return item, item_id

    def task_done(self, item_id: int, outcome: Outcome) -> None:
        item = self.running.pop(item_id)
        if len(self.history) > MAXIMUM_HISTORY_SIZE:
            self.history.pop(next(iter(self.history)))
        for key in SENSITIVE_EXTRA_DATA_KEYS:
            item[3].pop(key, None)
        self.history[item[1]] = {
            "prompt": item,
            "outputs": outcome.outputs,
            "status": {
                "status_str": "success" if outcome.success else "error",
                "completed": outcome.success,
                "messages": outcome.messages,
            },
            "meta": outcome.meta,
        }
        self.on_change()

    def remaining(self) -> int:
        return len(self.pending) + len(self.running)

    def running_ids(self) -> list[str]:
        return [item[1] for item in self.running.values()]

    def wipe(self) -> None:
        self.pending = []
        self.on_change()

    def delete(self, prompt_id: str) -> bool:
        for index, item in enumerate(self.pending):
            if item[1] != prompt_id:
                continue
            if len(self.pending) == 1:
                self.wipe()  # ComfyUI then reports the change a second time, so do we
            else:
                self.pending.pop(index)
                heapq.heapify(self.pending)
            self.on_change()
            return True
        return False

    def get_history(self, max_items: int | None = None, offset: int = -1) -> dict[str, Any]:
        if offset < 0 and max_items is not None:
            offset = len(self.history) - max_items
        out: dict[str, Any] = {}
        for index, (prompt_id, entry) in enumerate(self.history.items()):
            if index >= offset:
                out[prompt_id] = entry
                if max_items is not None and len(out) >= max_items:
                    break
        return out


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


class FakeServer:
    """The fake ComfyUI server: routes, websocket hub, queue and the single worker."""

    def __init__(self, env: NodeEnv) -> None:
        self.env = env
        self.gate = StallGate()
        self.hub = Hub(self.gate)
        self.queue = PromptQueue(self._queue_updated)
        self.executor = PromptExecutor(self.hub, env)
        self.number = 0
        self._tasks: list[asyncio.Task[None]] = []
        self.app = web.Application(
            client_max_size=MAX_UPLOAD_SIZE, middlewares=[origin_only, self._stall_middleware]
        )
        self._add_routes()
        self.app.on_startup.append(self._start_tasks)
        self.app.on_cleanup.append(self._stop_tasks)

    # --- plumbing ---

    def _add_routes(self) -> None:
        routes: list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]] = [
            ("GET", "/ws", self.websocket),
            ("GET", "/", self.index),
            ("GET", "/embeddings", self.empty_list),
            ("GET", "/extensions", self.empty_list),
            ("GET", "/system_stats", self.system_stats),
            ("GET", "/features", self.features),
            ("GET", "/prompt", self.get_prompt),
            ("POST", "/prompt", self.post_prompt),
            ("GET", "/object_info", self.object_info),
            ("GET", "/object_info/{node_class}", self.object_info_node),
            ("GET", "/history", self.get_history),
            ("GET", "/history/{prompt_id}", self.get_history_item),
            ("POST", "/history", self.post_history),
            ("GET", "/queue", self.get_queue),
            ("POST", "/queue", self.post_queue),
            ("POST", "/interrupt", self.interrupt),
            ("POST", "/free", self.free),
            ("POST", "/upload/image", self.upload_image),
            ("GET", "/view", self.view),
        ]
        for method, path, handler in routes:  # ComfyUI serves every API route under /api too
            self.app.router.add_route(method, "/api" + path, handler)
            self.app.router.add_route(method, path, handler)
        self.app.router.add_post("/fake/crash", self.fake_crash)
        self.app.router.add_post("/fake/drop-websockets", self.fake_drop_websockets)
        self.app.router.add_post("/fake/stall", self.fake_stall)
        self.app.router.add_get("/fake/clients", self.fake_clients)
        self.app.router.add_static("/assets", WEB_ROOT / "assets")

    @web.middleware
    async def _stall_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not request.path.startswith("/fake/"):
            await self.gate.wait()
        return await handler(request)

    async def _start_tasks(self, _app: web.Application) -> None:
        self._tasks = [
            asyncio.create_task(self.hub.publish_loop()),
            asyncio.create_task(self._worker()),
        ]

    async def _stop_tasks(self, _app: web.Application) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _queue_updated(self) -> None:
        self.hub.send_sync("status", {"status": self.queue_info()})

    def queue_info(self) -> dict[str, Any]:
        return {"exec_info": {"queue_remaining": self.queue.remaining()}}

    async def _worker(self) -> None:
        while True:
            item, item_id = await self.queue.get()
            started = time.perf_counter()
            try:
                outcome = await self.executor.execute(item)
            except Exception:  # a fake bug must not kill the worker; report it like a failure
                log.exception("fake executor failed")
                outcome = Outcome(False, [], {}, {})
            self.queue.task_done(item_id, outcome)
            if self.executor.client_id is not None:
                self.hub.send_sync(
                    "executing", {"node": None, "prompt_id": item[1]}, self.executor.client_id
                )
            log.info("Prompt executed in %.2f seconds", time.perf_counter() - started)

    # --- websocket ---

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = request.query.get("clientId", "")
        if sid:
            self.hub.sockets.pop(sid, None)
        else:
            sid = uuid.uuid4().hex
        self.hub.sockets[sid] = ws
        self.hub.metadata[sid] = {"feature_flags": {}}
        finished = asyncio.Event()
        if request.transport is not None:
            self.hub.connections[id(ws)] = (request.transport, finished)
        try:
            await self.hub.send("status", {"status": self.queue_info(), "sid": sid}, sid)
            if self.executor.client_id == sid and self.executor.last_node_id is not None:
                await self.hub.send("executing", {"node": self.executor.last_node_id}, sid)
            await self._read_client(ws, sid)
        finally:
            self.hub.sockets.pop(sid, None)
            self.hub.metadata.pop(sid, None)
            self.hub.connections.pop(id(ws), None)
            finished.set()
        return ws

    async def _read_client(self, ws: web.WebSocketResponse, sid: str) -> None:
        first_message = True
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            try:
                data = json.loads(msg.data)
                if first_message and data.get("type") == "feature_flags":
                    self.hub.metadata[sid]["feature_flags"] = data.get("data", {})
                    await self.hub.send("feature_flags", dict(SERVER_FEATURES), sid)
                first_message = False
            except json.JSONDecodeError:
                log.warning("Invalid JSON received from client %s: %s", sid, msg.data)
            except Exception as ex:
                log.error("Error processing WebSocket message: %s", ex)

    # --- simple GETs ---

    async def index(self, _request: web.Request) -> web.FileResponse:
        return web.FileResponse(WEB_ROOT / "index.html", headers={"Cache-Control": "no-cache"})

    async def empty_list(self, _request: web.Request) -> web.Response:
        return _json([])

    async def features(self, _request: web.Request) -> web.Response:
        return _json(dict(SERVER_FEATURES))

    async def get_prompt(self, _request: web.Request) -> web.Response:
        return _json(self.queue_info())

    async def system_stats(self, _request: web.Request) -> web.Response:
        ram_total, ram_free = _memory()
        return _json(
            {
                "system": {
                    "os": os.name,
                    "ram_total": ram_total,
                    "ram_free": ram_free,
                    "comfyui_version": COMFYUI_VERSION,
                    "required_frontend_version": "1.27.10",
                    "installed_templates_version": "0.1.95",
                    "required_templates_version": "0.1.95",
                    "python_version": sys.version,
                    "pytorch_version": "2.14.1+cu130",
                    "embedded_python": False,
                    "argv": sys.argv,
                },
                "devices": [
                    {
                        "name": "cpu",
                        "type": "cpu",
                        "index": None,
                        "vram_total": ram_total,
                        "vram_free": ram_free,
                        "torch_vram_total": ram_total,
                        "torch_vram_free": ram_free,
                    }
                ],
            }
        )

    async def object_info(self, _request: web.Request) -> web.Response:
        return _json({name: node_info(defn, self.env) for name, defn in NODES.items()})

    async def object_info_node(self, request: web.Request) -> web.Response:
        name = request.match_info["node_class"]
        return _json({name: node_info(NODES[name], self.env)} if name in NODES else {})

    # --- prompts and queue ---

    async def post_prompt(self, request: web.Request) -> web.Response:
        log.info("got prompt")
        body = await request.json()  # not JSON: aiohttp's plain 500, as in the recording
        if "number" in body:
            number: float | int = float(body["number"])
        else:
            number = -self.number if body.get("front") else self.number
            self.number += 1
        if "prompt" not in body:
            error = {
                "type": "no_prompt",
                "message": "No prompt provided",
                "details": "No prompt provided",
                "extra_info": {},
            }
            return _json({"error": error, "node_errors": {}}, status=400)
        prompt = body["prompt"]
        prompt_id = str(body.get("prompt_id", uuid.uuid4()))
        result = validate_prompt(prompt, self.env, body.get("partial_execution_targets"))
        extra_data = body.get("extra_data", {})
        if "client_id" in body:
            extra_data["client_id"] = body["client_id"]
        if not result.ok:
            log.warning("invalid prompt: %s", result.error)
            return _json({"error": result.error, "node_errors": result.node_errors}, status=400)
        self.queue.put((number, prompt_id, prompt, extra_data, result.outputs))
        return _json({"prompt_id": prompt_id, "number": number, "node_errors": result.node_errors})

    async def get_queue(self, _request: web.Request) -> web.Response:
        return _json(
            {
                "queue_running": list(self.queue.running.values()),
                "queue_pending": list(self.queue.pending),
            }
        )

    async def post_queue(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("clear"):
            self.queue.wipe()
        for prompt_id in body.get("delete", []):
            self.queue.delete(prompt_id)
        return web.Response(status=200)

    async def interrupt(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            body = {}
        prompt_id = body.get("prompt_id")
        if not prompt_id:
            log.info("Global interrupt (no prompt_id specified)")
            self.executor.interrupt()
        elif prompt_id in self.queue.running_ids():
            log.info("Interrupting prompt %s", prompt_id)
            self.executor.interrupt()
        else:
            log.info("Prompt %s is not currently running, skipping interrupt", prompt_id)
        return web.Response(status=200)

    async def free(self, _request: web.Request) -> web.Response:
        return web.Response(status=200)  # nothing is loaded, so there is nothing to free

    # --- history ---

    async def get_history(self, request: web.Request) -> web.Response:
        max_items = request.query.get("max_items")
        offset = request.query.get("offset")
        return _json(
            self.queue.get_history(
                int(max_items) if max_items is not None else None,
                int(offset) if offset is not None else -1,
            )
        )

    async def get_history_item(self, request: web.Request) -> web.Response:
        prompt_id = request.match_info["prompt_id"]
        entry = self.queue.history.get(prompt_id)
        return _json({prompt_id: entry} if entry is not None else {})

    async def post_history(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("clear"):
            self.queue.history.clear()
        for prompt_id in body.get("delete", []):
            self.queue.history.pop(prompt_id, None)
        return web.Response(status=200)

    # --- files ---

    def _dir_for(self, kind: str | None) -> Path | None:
        return {
            "input": self.env.input_dir,
            "output": self.env.output_dir,
            "temp": self.env.temp_dir,
        }.get(kind or "input")

    async def upload_image(self, request: web.Request) -> web.Response:
        post = await request.post()
        image = post.get("image")
        upload_type = str(post.get("type") or "input")
        base = self._dir_for(upload_type)
        if not isinstance(image, web.FileField) or not image.filename or base is None:
            return web.Response(status=400)
        subfolder = str(post.get("subfolder", ""))
        overwrite = str(post.get("overwrite")) in ("true", "1")
        name = _store_upload(base, subfolder, image.filename, image.file.read(), overwrite)
        if name is None:
            return web.Response(status=400)
        return _json({"name": name, "subfolder": subfolder, "type": upload_type})

    async def view(self, request: web.Request) -> web.StreamResponse:
        found = self._view_path(request.query)
        if isinstance(found, int):
            return web.Response(status=found)
        content_type = mimetypes.guess_type(found.name)[0] or "application/octet-stream"
        if content_type in UNSAFE_CONTENT_TYPES:
            content_type = "application/octet-stream"  # ComfyUI forces these to download
        headers = {"Content-Disposition": f'filename="{found.name}"', "Content-Type": content_type}
        return web.FileResponse(found, headers=headers)

    def _view_path(self, query: Mapping[str, str]) -> Path | int:
        """The file GET /view asks for, or the HTTP status ComfyUI answers instead."""
        if "filename" not in query:
            return 404
        filename, base = query["filename"], None
        for tag in ("input", "output", "temp"):
            if filename.endswith(f" [{tag}]"):
                filename, base = filename[: -len(tag) - 3], self._dir_for(tag)
        if not filename or filename[0] == "/" or ".." in filename:
            return 400
        base = base or self._dir_for(query.get("type", "output"))
        if base is None:
            return 400
        folder = base
        if "subfolder" in query:
            folder = Path(os.path.abspath(base / query["subfolder"]))
            if os.path.commonpath((str(folder), str(base))) != str(base):
                return 403
        path = folder / os.path.basename(filename)
        return path if path.is_file() else 404

    # --- fault injection ---

    async def fake_crash(self, _request: web.Request) -> web.Response:
        log.error("fake crash requested: exiting with status 137")
        for handler in logging.getLogger().handlers + log.handlers:
            handler.flush()
        os._exit(137)

    async def fake_drop_websockets(self, _request: web.Request) -> web.Response:
        await self.hub.drop_all()
        return web.Response(status=200)

    async def fake_stall(self, request: web.Request) -> web.Response:
        self.gate.stall(float(request.query.get("seconds", "5")))
        return web.Response(status=200)

    async def fake_clients(self, _request: web.Request) -> web.Response:
        return _json({"clients": list(self.hub.sockets)})


def _store_upload(
    base: Path, subfolder: str, name: str, content: bytes, overwrite: bool
) -> str | None:
    """Save an upload like ComfyUI; returns the stored name, or None for a path outside base."""
    folder = base / os.path.normpath(subfolder)
    path = Path(os.path.abspath(folder / name))
    if os.path.commonpath((str(base), str(path))) != str(base):
        return None
    folder.mkdir(parents=True, exist_ok=True)
    if not overwrite:
        name, path = _free_name(folder, name, content)
    if not path.exists() or path.read_bytes() != content:
        path.write_bytes(content)
    return name


def _free_name(folder: Path, name: str, content: bytes) -> tuple[str, Path]:
    """ComfyUI's upload naming without overwrite: same bytes reuse the name, else "x (1).png"."""
    stem, ext = os.path.splitext(name)
    candidate, index = name, 1
    while (folder / candidate).exists() and (folder / candidate).read_bytes() != content:
        candidate = f"{stem} ({index}){ext}"
        index += 1
    return candidate, folder / candidate


def _memory() -> tuple[int, int]:
    """(total, available) RAM in bytes from /proc/meminfo, or fixed plausible numbers."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        return int(fields["MemTotal"].split()[0]) * 1024, int(
            fields["MemAvailable"].split()[0]
        ) * 1024
    except (OSError, KeyError, ValueError):
        return 16 * 1024**3, 12 * 1024**3

"""One persistent websocket to ComfyUI whose events are routed to runs by prompt id.

Runs subscribe *before* they post their prompt (the agent picks the prompt id), so no
event can be missed even when a fully cached prompt finishes within milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass

import aiohttp

from comfyui.events import (
    TERMINAL_EVENTS,
    BinaryFrame,
    ComfyEvent,
    Executing,
    ExecutionStart,
    StatusEvent,
    parse_binary_frame,
    parse_text_frame,
)


@dataclass(frozen=True)
class ConnectionGap:
    """Marker: the websocket dropped or reconnected, so events may have been missed."""

    connected: bool


StreamItem = ComfyEvent | BinaryFrame | ConnectionGap


class Subscription:
    """The events of one prompt, in order, plus gap markers and its preview frames."""

    def __init__(self, prompt_id: str, stream: EventStream) -> None:
        self.prompt_id = prompt_id
        self._queue: asyncio.Queue[StreamItem] = asyncio.Queue()
        self._stream = stream

    def put(self, item: StreamItem) -> None:
        """Deliver an item (called by the stream)."""
        self._queue.put_nowait(item)

    async def get(self, timeout: float) -> StreamItem | None:
        """Next item, or None when nothing arrived within timeout seconds."""
        if not self._queue.empty():
            return self._queue.get_nowait()  # events come in bursts: no timer for these
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation.
        try:
            async with asyncio.timeout(timeout):
                return await self._queue.get()
        except TimeoutError:
            return None

    def close(self) -> None:
        """Stop receiving events."""
        self._stream.unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventStream:
    """Keeps a websocket to ComfyUI open (reconnecting, with heartbeat) and routes its events."""

    def __init__(
        self,
        base_url: str,
        session: aiohttp.ClientSession,
        *,
        client_id: str | None = None,
        logger: logging.Logger | None = None,
        heartbeat: float = 10.0,
        reconnect_initial: float = 0.1,
        reconnect_max: float = 2.0,
    ) -> None:
        self.client_id = client_id or str(uuid.uuid4())
        self._url = f"{base_url.rstrip('/')}/ws?clientId={self.client_id}"
        self._session = session
        self._log = logger or logging.getLogger("comfyui.events")
        self._heartbeat = heartbeat
        self._reconnect_initial = reconnect_initial
        self._reconnect_max = reconnect_max
        self._subscriptions: dict[str, list[Subscription]] = {}
        self._connected = asyncio.Event()
        self._kicked = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        # Type-1 preview frames carry no prompt id; ComfyUI runs one prompt at a time, so
        # they belong to the prompt that is executing now.
        self._executing_prompt: str | None = None
        self.queue_remaining: int | None = None
        self.reconnects = 0

    @property
    def connected(self) -> bool:
        """True while the websocket is open."""
        return self._connected.is_set()

    def start(self) -> None:
        """Start connecting in the background."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="comfyui-event-stream")

    async def stop(self) -> None:
        """Close the websocket and stop reconnecting."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._connected.clear()

    async def wait_connected(self, timeout: float) -> bool:
        """Wait until the websocket is open; False on timeout."""
        try:
            async with asyncio.timeout(timeout):
                await self._connected.wait()
        except TimeoutError:
            return False
        return True

    def kick(self) -> None:
        """ComfyUI is ready again: reconnect now instead of after the back-off."""
        if not self._connected.is_set():
            self._kicked.set()

    async def reconnect(self) -> None:
        """Drop the current socket (it reconnects at once); used after a child restart."""
        ws = self._ws
        if ws is not None:
            await ws.close()

    def subscribe(self, prompt_id: str) -> Subscription:
        """Receive the events of prompt_id from now on."""
        subscription = Subscription(prompt_id, self)
        self._subscriptions.setdefault(prompt_id, []).append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Stop routing to subscription."""
        subscribers = self._subscriptions.get(subscription.prompt_id)
        if subscribers and subscription in subscribers:
            subscribers.remove(subscription)
            if not subscribers:
                del self._subscriptions[subscription.prompt_id]

    def deliver(self, prompt_id: str, item: StreamItem) -> None:
        """Put an item into prompt_id's subscriptions (wakes a waiting run)."""
        for subscription in tuple(self._subscriptions.get(prompt_id, ())):
            subscription.put(item)

    async def _run(self) -> None:
        delay = self._reconnect_initial
        while True:
            try:
                async with self._session.ws_connect(
                    self._url, heartbeat=self._heartbeat, max_msg_size=0
                ) as ws:
                    self._ws = ws
                    self._connected.set()
                    self._log.info("connected to ComfyUI websocket as client %s", self.client_id)
                    # Events sent while disconnected are not replayed: runs check history.
                    self._broadcast(ConnectionGap(connected=True))
                    delay = self._reconnect_initial
                    await self._read(ws)
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                self._log.debug("ComfyUI websocket connect failed: %r", exc)
            finally:
                self._ws = None
                if self._connected.is_set():
                    self._connected.clear()
                    self.reconnects += 1
                    self._log.warning("ComfyUI websocket closed; reconnecting")
                    self._broadcast(ConnectionGap(connected=False))
            # Sleep the back-off, unless kick() says ComfyUI is back (a restarted child).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._kicked.wait()
            if self._kicked.is_set():
                self._kicked.clear()
                delay = self._reconnect_initial
            else:
                delay = min(delay * 2, self._reconnect_max)

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                self._dispatch(parse_text_frame(message.data))
            elif message.type == aiohttp.WSMsgType.BINARY:
                self._dispatch_binary(parse_binary_frame(message.data))
            elif message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.ERROR):
                break

    def _dispatch(self, event: ComfyEvent) -> None:
        if isinstance(event, StatusEvent):
            if event.queue_remaining is not None:
                self.queue_remaining = event.queue_remaining
            return
        prompt_id = event.event_prompt_id
        if prompt_id is None:
            # e.g. the bare {"executing": {"node": ...}} a reconnected socket gets.
            return
        if isinstance(event, ExecutionStart):
            self._executing_prompt = prompt_id
        elif self._executing_prompt == prompt_id and _ends_prompt(event):
            self._executing_prompt = None
        self.deliver(prompt_id, event)

    def _dispatch_binary(self, frame: BinaryFrame) -> None:
        prompt_id = frame.prompt_id or self._executing_prompt
        if prompt_id is not None:
            self.deliver(prompt_id, frame)

    def _broadcast(self, item: StreamItem) -> None:
        for subscribers in tuple(self._subscriptions.values()):
            for subscription in tuple(subscribers):
                subscription.put(item)


def _ends_prompt(event: ComfyEvent) -> bool:
    return isinstance(event, TERMINAL_EVENTS) or (
        isinstance(event, Executing) and event.node is None
    )

"""The objects one agent process is made of, created at start-up and kept on the app."""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from agent.answer_cache import AnswerCache
from agent.apps.registry import AppRegistry
from agent.delivery.hooks import Delivery
from agent.delivery.output_files import OutputFiles
from agent.delivery.warmup import Warmup
from agent.prepare import WorkflowPreparer
from agent.runner import TaskRunner
from agent.settings import AgentSettings
from comfyui.backend import ComfyUIBackend
from comfyui.client import ComfyUIClient
from comfyui.event_stream import EventStream
from store.base import Store


@dataclass
class Services:
    """Everything a request handler may use; no module-level state anywhere."""

    settings: AgentSettings
    store: Store
    backend: ComfyUIBackend
    session: aiohttp.ClientSession
    client: ComfyUIClient
    events: EventStream
    runner: TaskRunner
    preparer: WorkflowPreparer
    apps: AppRegistry
    # Output uploads and webhooks at the end of runs; the warm-up gate on readiness.
    delivery: Delivery | None = None
    warmup: Warmup | None = None
    # Finished tasks' read answers as bytes (None: every read goes to the store).
    answers: AnswerCache | None = None
    # Where output files are read for sync answers (ComfyUI's output dir, else /view).
    output_files: OutputFiles | None = None
    # Open client websockets, closed at shutdown so none holds the exit.
    websockets: weakref.WeakSet[web.WebSocketResponse] = field(default_factory=weakref.WeakSet)


SERVICES = web.AppKey("services", Services)


def services(request: web.Request) -> Services:
    """The services of the app that handles request."""
    return request.app[SERVICES]

"""The end of every run: upload outputs before a task is called succeeded, then its webhook.

Plugged into the runner (agent.runner.RunHooks), so sync, async, task and app runs all
deliver the same way. A run's `DeliveryPlan` (from its request) says where.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections import OrderedDict
from collections.abc import Mapping

from agent.address_policy import AddressPolicy
from agent.delivery.metrics import DeliveryMetrics
from agent.delivery.output_store import OutputStore, OutputStoreConfigError
from agent.delivery.plan import DeliveryPlan
from agent.delivery.stores import endpoint_host, open_output_store
from agent.delivery.uploads import Uploader, UploadFailed
from agent.delivery.webhook import WebhookSender, WebhookUrlRefused
from agent.runner import RunHandle, task_log
from store.base import Store, StoreError
from store.records import TaskError, TaskRecord, TaskStatus

log = logging.getLogger("agent.delivery")

# Terminal statuses the owner announces, and their event types.
EVENT_TYPES = {
    TaskStatus.SUCCEEDED: "task.succeeded",
    TaskStatus.FAILED: "task.failed",
    TaskStatus.INTERRUPTED: "task.interrupted",
}
# Per-request output stores kept open (most recently used first out last).
_STORE_CACHE_SIZE = 16


class DeliveryRefused(ValueError):
    """A request's output store or webhook URL cannot be used; the message says why."""


class Delivery:
    """Uploads outputs and sends webhooks for the runs of this instance."""

    def __init__(
        self,
        *,
        store: Store,
        uploader: Uploader,
        webhooks: WebhookSender,
        policy: AddressPolicy,
        metrics: DeliveryMetrics,
        default_store: str | None = None,
        optional: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._store = store
        self._uploader = uploader
        self.webhooks = webhooks
        self._policy = policy
        self.metrics = metrics
        self._default_store = default_store
        self._optional = optional
        self._env = env
        self._stores: OrderedDict[str, OutputStore] = OrderedDict()
        self._pending: dict[str, asyncio.Task[None]] = {}

    # -- checks at request time ----------------------------------------------------------

    async def check(self, plan: DeliveryPlan) -> None:
        """Refuse a plan whose store URL or webhook URL cannot be used (DeliveryRefused)."""
        if plan.output_store is not None:
            await self._output_store(plan.output_store)
        if plan.webhook_url is not None:
            try:
                self.webhooks.check(plan.webhook_url)
            except WebhookUrlRefused as exc:
                raise DeliveryRefused(str(exc)) from None

    async def _output_store(self, url: str) -> OutputStore:
        store = self._stores.get(url)
        if store is not None:
            self._stores.move_to_end(url)
            return store
        try:
            if url != self._default_store:
                # A caller's store gets the agent's credentials: fence where they go.
                await self._check_endpoint(url)
            store = open_output_store(url, self._env)
        except (OutputStoreConfigError, ValueError) as exc:
            raise DeliveryRefused(str(exc)) from None
        self._stores[url] = store
        while len(self._stores) > _STORE_CACHE_SIZE:
            _, old = self._stores.popitem(last=False)
            await old.close()
        return store

    async def _check_endpoint(self, url: str) -> None:
        host = endpoint_host(url)
        if host is None:
            return
        try:
            addresses = [ipaddress.ip_address(host)]
        except ValueError:
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(host, None)
            except OSError as exc:
                raise DeliveryRefused(f"output store endpoint {host}: {exc}") from None
            # The client resolves again when it connects; a name that changes its answer in
            # between (DNS rebinding) is not caught here, unlike webhook and image fetches.
            addresses = [ipaddress.ip_address(str(info[4][0])) for info in infos]
        for address in addresses:
            reason = self._policy.check(host, address)
            if reason is not None:
                raise DeliveryRefused(
                    f"output store endpoint refused: {reason} (an operator can allow it "
                    "with --url-fetch-allow)"
                )

    # -- RunHooks --------------------------------------------------------------------------

    async def before_success(self, handle: RunHandle) -> TaskError | None:
        """Upload the outputs (the task still shows running); a failure fails it."""
        plan = handle.delivery
        if not isinstance(plan, DeliveryPlan) or plan.output_store is None:
            return None
        record = handle.record
        if not any(node.images for node in record.progress.values()):
            return None
        try:
            store = await self._output_store(plan.output_store)
            urls = await self._uploader.upload_task(
                store, record, image_format=plan.image_format, presign=plan.presign
            )
        except (UploadFailed, DeliveryRefused) as exc:
            file_name = exc.file_name if isinstance(exc, UploadFailed) else None
            if self._optional:
                log.warning(
                    "task %s: outputs not uploaded (--output-store-optional): %s",
                    record.task_id, exc, extra=task_log(handle),
                )  # fmt: skip
                return None
            return TaskError(
                type="output_upload_failed",
                message=str(exc),
                details={"file": file_name, "output_store": plan.output_store.split("?")[0]},
            )
        for node_id, node_urls in urls.items():
            record.progress[node_id].urls = node_urls
        return None

    def after_end(self, handle: RunHandle) -> None:
        """Send the webhook in the background (it outlives the request that started the run)."""
        plan = handle.delivery
        if not isinstance(plan, DeliveryPlan) or plan.webhook_url is None:
            return
        record = handle.snapshot()
        event = EVENT_TYPES.get(record.status)
        if event is None:
            return
        task = asyncio.create_task(
            self._deliver(plan.webhook_url, event, record), name=f"webhook-{record.task_id}"
        )
        self._pending[record.task_id] = task
        task.add_done_callback(lambda _: self._forget(record.task_id, task))

    def _forget(self, task_id: str, task: asyncio.Task[None]) -> None:
        if self._pending.get(task_id) is task:
            del self._pending[task_id]

    async def _deliver(self, url: str, event: str, record: TaskRecord) -> None:
        marker = "webhook_" + event.split(".", 1)[1]
        try:
            first = await self._store.mark_once(record.task_id, marker)
        except StoreError as exc:
            # Without the marker another instance might deliver too; sending a duplicate
            # (same task, same outcome) beats sending nothing.
            log.warning("task %s: webhook marker not set: %s", record.task_id, exc)
            first = True
        if not first:
            self.metrics.webhooks["skipped"] += 1
            log.info(
                "task %s: %s webhook already sent by another delivery",
                record.task_id, event, extra=task_log(record),
            )  # fmt: skip
            return
        data = record.model_dump(mode="json")
        await self.webhooks.send(url, event, data, record.task_id)

    async def wait_delivered(self, task_id: str, timeout: float) -> None:
        """Wait (bounded) for the webhook of task_id, if one is being sent."""
        task = self._pending.get(task_id)
        if task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), timeout)

    async def close(self, grace: float = 10.0) -> None:
        """Give webhooks in flight `grace` s, then stop them; close stores and sessions."""
        pending = list(self._pending.values())
        if pending:
            _, still = await asyncio.wait(pending, timeout=grace)
            for task in still:
                task.cancel()
            if still:
                await asyncio.wait(still)
        for store in self._stores.values():
            await store.close()
        self._stores.clear()
        await self.webhooks.close()

"""One run's claim on its task: the fencing token, lease renewal, and noticing a take-over.

The store hands each claim a token (store.fencing); every write of the run carries it and
the store refuses it once another run took the task over. This object keeps the token,
renews the lease on a clock, and turns "refused" into one flag the runner acts on: stop at
once, interrupt the prompt, write nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from store.base import ClaimSuperseded, Store, StoreError

log = logging.getLogger("agent.claim")


class RunClaim:
    """The claim a run holds on its task, from claim() to release()."""

    def __init__(
        self,
        store: Store,
        task_id: str,
        owner: str,
        token: int,
        lease: float,
        *,
        on_superseded: Callable[[], Awaitable[None]] | None = None,
        on_failure: Callable[[Exception], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.task_id = task_id
        self.owner = owner
        self.token = token
        self.lease = lease
        self.on_superseded = on_superseded
        self.on_failure = on_failure
        self._monotonic = monotonic
        # When the last renewal that the store confirmed was asked for (the claim was
        # taken just before this object was made). Elapsed time is measured on the
        # monotonic clock, which keeps counting while the process is frozen.
        self._confirmed_at = monotonic()
        self.superseded = False
        # A claim still being taken (see taking()); None once it is known to be held.
        self._taking: asyncio.Future[int | None] | None = None
        # A claim to be taken at the first held() (see taking()).
        self._deferred = False
        # Why a claim being taken was not obtained (a store outage, or held elsewhere).
        self.refusal: str | None = None

    @classmethod
    async def take(cls, store: Store, task_id: str, owner: str, lease: float) -> RunClaim | None:
        """Claim task_id for a new run (StoreError when unreachable); None if held elsewhere."""
        token = await store.claim(task_id, owner, lease)
        return None if token is None else cls(store, task_id, owner, token, lease)

    @classmethod
    def taking(cls, store: Store, task_id: str, owner: str, lease: float) -> RunClaim:
        """A claim taken later, while the run goes on: the first held() starts taking it.

        Only for a task id this instance has just made up: nobody else can hold it, or
        learn it before the run's first record, which waits for the claim (held()). The
        run asks once its prompt is posted, so the claim's store I/O does not slow the post.
        """
        claim = cls(store, task_id, owner, 0, lease)
        claim._deferred = True
        return claim

    @property
    def refused(self) -> bool:
        """True once a claim being taken is known not to be held (no waiting)."""
        if self._taking is not None and self._taking.done():
            self._settle(self._taking)
        return self.refusal is not None

    async def held(self) -> bool:
        """Whether the run holds the claim, waiting for it while it is being taken."""
        if self._deferred:
            self._deferred = False
            self._taking = asyncio.ensure_future(
                self.store.claim(self.task_id, self.owner, self.lease)
            )
        if self._taking is not None:
            await asyncio.wait([self._taking])
            self._settle(self._taking)
        return self.refusal is None

    def _settle(self, taking: asyncio.Future[int | None]) -> None:
        if self._taking is None:
            return
        self._taking = None
        if taking.cancelled():
            self.refusal = "the claim was cancelled"
        elif (exc := taking.exception()) is not None:
            self.refusal = f"the task store could not be reached: {exc}"
            if self.on_failure is not None and isinstance(exc, Exception):
                self.on_failure(exc)  # counted like the outage of a claim taken up front
        elif (token := taking.result()) is None:
            self.refusal = "the task is held by another run"
        else:
            self.token = token
            self._confirmed_at = self._monotonic()

    @property
    def renew_every(self) -> float:
        """How often the lease is renewed: a third of it, so two renewals may fail in a row."""
        return max(self.lease / 3, 0.05)

    def due(self) -> bool:
        """True when the lease should be renewed now (also after a freeze, before any write)."""
        return self._monotonic() - self._confirmed_at >= self.renew_every

    async def renew(self) -> bool:
        """Renew the lease; False once the run was superseded (a store outage is not that)."""
        if self.superseded or not await self.held():
            return False
        asked = self._monotonic()
        try:
            renewed = await self.store.renew(self.task_id, self.owner, self.token, self.lease)
        except Exception as exc:  # an outage: the run goes on, the next renewal tries again
            if self.on_failure is not None:
                self.on_failure(exc)
            return True
        if not renewed:
            await self.supersede(None)
            return False
        self._confirmed_at = asked
        return True

    async def supersede(self, refused: ClaimSuperseded | None) -> None:
        """The store refused this claim's token: mark the run superseded (once) and say so."""
        if self.superseded:
            return
        self.superseded = True
        newer = f" by token {refused.current}" if refused and refused.current else ""
        log.warning(
            "task %s: claim token %d was superseded%s (the task was taken over while this"
            " instance was frozen or cut off): stopping the run, writing nothing more",
            self.task_id,
            self.token,
            newer,
            extra={"task_id": self.task_id, "prompt_id": None},
        )
        if self.on_superseded is not None:
            await self.on_superseded()

    async def release(self) -> None:
        """End the claim (no effect once superseded); StoreError when unreachable."""
        if not self.superseded and await self.held():
            await self.store.release(self.task_id, self.token)


# How long an ended run's claim waits for its caller's answer to be sent before it is
# released anyway (a stuck client connection must not hold the task).
ANSWER_WAIT = 1.0


class ClaimReleases:
    """The claims of ended runs being released, by task id.

    A claim is released once the run's caller has its answer (RunHandle.answered), so that
    the release's store I/O does not slow the answer down; a new run of the same task id on
    this instance waits for it, and shutdown waits for all of them.
    """

    def __init__(self, on_failure: Callable[[], None]) -> None:
        self._on_failure = on_failure
        self._pending: dict[str, asyncio.Future[None]] = {}

    def start(self, claim: RunClaim, after: asyncio.Event | None = None) -> asyncio.Future[None]:
        """Release claim (after `after` is set, or ANSWER_WAIT s) in the background."""
        releasing = asyncio.ensure_future(self.release(claim, after))
        self._pending[claim.task_id] = releasing
        releasing.add_done_callback(lambda _: self._forget(claim.task_id, releasing))
        return releasing

    async def release(self, claim: RunClaim, after: asyncio.Event | None = None) -> None:
        """Release claim now (after `after`); a store outage is counted, not raised."""
        if after is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(ANSWER_WAIT):
                    await after.wait()
        try:
            await claim.release()
        except StoreError:
            self._on_failure()  # the claim expires with its lease anyway

    async def wait(self, task_id: str) -> None:
        """Wait for the release of task_id's last claim here, if one is under way."""
        releasing = self._pending.get(task_id)
        if releasing is not None:
            await asyncio.shield(releasing)

    async def wait_all(self, timeout: float = 5.0) -> None:
        """Wait up to timeout s for every release under way (before the store closes)."""
        if self._pending:
            await asyncio.wait(list(self._pending.values()), timeout=timeout)

    def _forget(self, task_id: str, releasing: asyncio.Future[None]) -> None:
        if self._pending.get(task_id) is releasing:
            del self._pending[task_id]

"""Why a run could not start: the task runs already, the store or the queue refused it."""

from __future__ import annotations


class TaskAlreadyRunning(Exception):
    """A task with this id runs already: here, or on the instance holding its claim."""

    def __init__(self, task_id: str, *, here: bool) -> None:
        where = "on this instance" if here else "on another instance"
        super().__init__(f"task {task_id} is already running {where}")
        self.here = here


class StoreUnavailable(Exception):
    """The store could not be reached to claim the task."""


class QueueFull(Exception):
    """--max-queue tasks are queued or running here already."""


class ShuttingDown(Exception):
    """The agent stopped accepting work."""

"""The apps of an `--apps` directory, re-read when its files change.

The directory is usually on a NAS shared by every instance, where change notification
does not cross machines, so it is scanned instead: on access, at most every `rescan`
seconds. A scan stats every `*.json` file and re-reads only those whose size or mtime
changed; all file I/O runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.apps.panels import App
from agent.apps.parse import AppProblem, parse_app_file

log = logging.getLogger("agent.apps")

# Seconds a scan stays fresh: edits show within this, and a busy instance stats the NAS
# directory at most this often.
DEFAULT_RESCAN = 2.0


@dataclass(frozen=True)
class _FileState:
    """One file as last read: its stat signature and what it yielded."""

    signature: tuple[int, int]
    apps: tuple[App, ...]
    problems: tuple[AppProblem, ...]


class AppRegistry:
    """Apps by id from a directory of app files; broken entries are logged and counted."""

    def __init__(
        self,
        directory: Path | None,
        *,
        rescan: float = DEFAULT_RESCAN,
        on_problem: Callable[[AppProblem], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = directory
        self._rescan = rescan
        self._on_problem = on_problem
        self._clock = clock
        self._files: dict[str, _FileState] = {}
        self._apps: dict[str, App] = {}
        self.problems: list[AppProblem] = []
        self._scanned_at: float | None = None
        self._lock = asyncio.Lock()
        self._missing_logged = False

    async def apps(self) -> dict[str, App]:
        """Every loaded app by id, in file-name order (re-scanned when stale)."""
        await self._refresh()
        return self._apps

    async def get(self, app_id: str) -> App | None:
        """The app with this id, or None."""
        return (await self.apps()).get(app_id)

    async def _refresh(self) -> None:
        if self.directory is None or not self._stale():
            return
        async with self._lock:
            if not self._stale():
                return  # another caller scanned while this one waited
            files = await asyncio.to_thread(self._scan, self.directory, dict(self._files))
            self._scanned_at = self._clock()
            self._install(files)

    def _stale(self) -> bool:
        return self._scanned_at is None or self._clock() - self._scanned_at >= self._rescan

    def _scan(self, directory: Path, known: dict[str, _FileState]) -> dict[str, _FileState]:
        """Stat every app file; re-read the changed ones (runs in a worker thread)."""
        try:
            paths = sorted(p for p in directory.iterdir() if _is_app_file(p))
        except OSError as exc:
            if not self._missing_logged:
                log.warning("apps directory %s cannot be read: %s", directory, exc)
                self._missing_logged = True
            return {}
        self._missing_logged = False
        result: dict[str, _FileState] = {}
        for path in paths:
            try:
                stat = path.stat()
                signature = (stat.st_mtime_ns, stat.st_size)
                previous = known.get(path.name)
                if previous is not None and previous.signature == signature:
                    result[path.name] = previous
                    continue
                raw = path.read_bytes()
            except OSError as exc:
                problem = AppProblem(path.name, f"cannot be read: {exc}")
                result[path.name] = _FileState((0, 0), (), (problem,))
                continue
            apps, problems = parse_app_file(path.stem, path.name, raw)
            result[path.name] = _FileState(signature, tuple(apps), tuple(problems))
            if apps:
                log.info("apps file %s: loaded %s", path.name, ", ".join(a.id for a in apps))
        return result

    def _install(self, files: dict[str, _FileState]) -> None:
        apps: dict[str, App] = {}
        problems: list[AppProblem] = []
        for state in files.values():
            problems.extend(state.problems)
            for app in state.apps:
                if app.id in apps:
                    first = apps[app.id].source
                    problems.append(
                        AppProblem(app.source, f"app id already used by {first}", app.id)
                    )
                    continue
                apps[app.id] = app
        # Each problem is logged and counted once, not on every scan that still finds it.
        known = set(self.problems)
        for problem in problems:
            if problem not in known:
                log.error("apps file %s; skipped", problem)
                if self._on_problem is not None:
                    self._on_problem(problem)
        self._files = files
        self._apps = apps
        self.problems = problems


def _is_app_file(path: Path) -> bool:
    # Dot files are editors' and rsync's temporary copies, not apps.
    return path.suffix == ".json" and not path.name.startswith(".") and path.is_file()

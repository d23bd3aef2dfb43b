"""How the store conformance suite builds each kind of store: add a kind here, and a param."""

from __future__ import annotations

from pathlib import Path

from store import FileStore, MemoryStore, Store

STORE_KINDS = ["memory", "file"]


async def make_store(kind: str, tmp_path: Path, ttl: float | None) -> Store:
    """A fresh, empty store of the given kind, private to one test."""
    if kind == "memory":
        return MemoryStore(ttl=ttl)
    if kind == "file":
        # Fast polling keeps cross-instance watch tests quick; the sweeper is driven by the
        # tests themselves (sweep()), never by the clock.
        return FileStore(tmp_path / "tasks", ttl=ttl, poll_interval=0.02, sweep_interval=3600)
    raise ValueError(f"unknown store kind {kind!r}")


def stored_names(kind: str, store: Store, tmp_path: Path) -> set[str]:
    """Everything the backend holds for the test, to prove a refused save wrote nothing."""
    if kind == "memory":
        assert isinstance(store, MemoryStore)
        return set(store._records)
    if kind == "file":
        return {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if not p.is_dir()}
    raise ValueError(f"unknown store kind {kind!r}")

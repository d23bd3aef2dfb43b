"""What a started agent has imported: only what its store and options need.

Each import costs idle memory (redis-py ~6 MiB, obstore ~5 MiB, pydantic-settings ~1 MiB):
an agent that does not use them must not load them, or the saving silently goes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.store_factories import RedisTarget

# Built as the server builds it (agent.server, as the console script loads it), started
# (store opened, ComfyUI probed), then the loaded modules printed.
STARTED_AGENT = """
import asyncio
import sys

from aiohttp import web

from agent.app import create_app
from agent.server import make_backend
from agent.settings import parse_settings


async def main() -> None:
    settings = parse_settings(sys.argv[1:])
    runner = web.AppRunner(create_app(settings, await make_backend(settings)))
    await runner.setup()
    try:
        print("\\n".join(sorted(sys.modules)))
    finally:
        await runner.cleanup()


asyncio.run(main())
"""
# Packages only some deployments need, each with what needs it.
OPTIONAL = ("redis", "obstore", "pydantic_settings", "PIL")


def loaded_packages(*flags: str) -> set[str]:
    """The top-level packages an agent started with these flags has imported."""
    argv = ["--comfyui-url", "http://127.0.0.1:9", "--shutdown-grace", "0", *flags]
    done = subprocess.run(
        [sys.executable, "-c", STARTED_AGENT, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return {name.split(".")[0] for name in done.stdout.split()}


def test_a_file_store_agent_loads_no_optional_package(tmp_path: Path) -> None:
    loaded = loaded_packages("--store", f"file://{tmp_path / 'tasks'}")
    assert "agent" in loaded and "aiohttp" in loaded
    assert loaded.isdisjoint(OPTIONAL), sorted(loaded & set(OPTIONAL))


def test_a_memory_store_agent_loads_no_optional_package() -> None:
    loaded = loaded_packages("--store", "memory://")
    assert loaded.isdisjoint(OPTIONAL), sorted(loaded & set(OPTIONAL))


def test_redis_and_obstore_are_loaded_when_configured(
    tmp_path: Path, redis_target: RedisTarget
) -> None:
    joiner = "&" if "?" in redis_target.url else "?"
    store = f"{redis_target.url}{joiner}prefix={redis_target.prefix_for(tmp_path)}"
    output_store = "s3://bucket/out?endpoint=http://127.0.0.1:9&region=r"
    loaded = loaded_packages("--store", store, "--output-store", output_store)
    assert {"redis", "obstore"} <= loaded
    assert loaded.isdisjoint({"pydantic_settings", "PIL"})

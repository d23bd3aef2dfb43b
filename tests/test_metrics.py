"""/metrics: prometheus-client exposition, scraped and parsed with the library's own parser."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from agent.metrics import Metrics
from tests.agent_harness import AgentUnderTest, running_agent, trace_prompt

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> tuple[dict[str, str], Samples]:
    """Family name → type, and every sample by (name, labels)."""
    types: dict[str, str] = {}
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return types, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


async def scrape(agent: AgentUnderTest) -> tuple[dict[str, str], Samples]:
    async with agent.session.get(f"{agent.url}/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return parse(await response.text())


def test_each_metrics_object_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()  # the global registry would refuse the second
    first.run_finished("succeeded", 1.5)
    first.store_write(0.002)
    first.store_failure()
    first.node_executed("KSampler", 4.0)
    first.run_started(0.3)
    _, one = parse(first.render(queue_depth=2, child_restarts=3, comfyui_ready=True))
    _, two = parse(second.render(queue_depth=0, child_restarts=0, comfyui_ready=False))
    assert value(one, "comfyui_agent_runs_total", outcome="succeeded") == 1
    assert ("comfyui_agent_runs_total", frozenset({("outcome", "succeeded")})) not in two
    assert value(one, "comfyui_agent_run_duration_seconds_sum") == 1.5
    assert value(one, "comfyui_agent_run_duration_seconds_bucket", le="2.5") == 1
    assert value(one, "comfyui_agent_run_duration_seconds_bucket", le="1.0") == 0
    assert value(one, "comfyui_agent_store_writes_total") == 1
    assert value(one, "comfyui_agent_store_write_seconds_count") == 1
    assert value(one, "comfyui_agent_store_failures_total") == 1
    assert value(one, "comfyui_agent_node_execution_seconds_count", node_type="KSampler") == 1
    assert value(one, "comfyui_agent_queue_wait_seconds_sum") == 0.3
    assert value(one, "comfyui_agent_queue_depth") == 2
    assert value(one, "comfyui_agent_child_restarts_total") == 3
    assert value(one, "comfyui_agent_comfyui_ready") == 1
    assert value(two, "comfyui_agent_comfyui_ready") == 0
    assert value(two, "comfyui_agent_store_writes_total") == 0


def test_websocket_watchers_count_open_blocks() -> None:
    metrics = Metrics()
    with metrics.websocket_watcher("watch"), metrics.websocket_watcher("watch"):
        _, inside = parse(metrics.render(queue_depth=0, child_restarts=0, comfyui_ready=True))
    _, after = parse(metrics.render(queue_depth=0, child_restarts=0, comfyui_ready=True))
    assert value(inside, "comfyui_agent_websocket_watchers", mode="watch") == 2
    assert value(inside, "comfyui_agent_websocket_watchers", mode="run") == 0
    assert value(after, "comfyui_agent_websocket_watchers", mode="watch") == 0


def slow_prompt(steps: int) -> dict[str, Any]:
    prompt = trace_prompt("progress")
    prompt["1"]["inputs"]["color"] = uuid.uuid4().int % 0xFFFFFF
    prompt["2"]["inputs"]["steps"] = steps
    return prompt


async def test_scrape_of_a_running_agent(tmp_path: Path) -> None:
    async with running_agent(tmp_path) as agent:
        types, before = await scrape(agent)
        # The same names as the hand-written exposition had, with their types.
        assert types["comfyui_agent_runs"] == "counter"
        assert types["comfyui_agent_run_duration_seconds"] == "histogram"
        assert types["comfyui_agent_queue_depth"] == "gauge"
        assert types["comfyui_agent_store_writes"] == "counter"
        assert types["comfyui_agent_store_write_seconds"] == "histogram"
        assert types["comfyui_agent_store_failures"] == "counter"
        assert types["comfyui_agent_child_restarts"] == "counter"
        assert types["comfyui_agent_comfyui_ready"] == "gauge"
        assert types["comfyui_agent_node_execution_seconds"] == "histogram"
        assert types["comfyui_agent_queue_wait_seconds"] == "histogram"
        assert types["comfyui_agent_websocket_watchers"] == "gauge"
        assert types["comfyui_agent_sync_overhead_seconds"] == "histogram"
        # Process metrics come from the library's collectors.
        assert value(before, "process_resident_memory_bytes") > 0
        assert value(before, "process_open_fds") > 0
        assert "python_info" in types
        assert value(before, "comfyui_agent_comfyui_ready") == 1

        run = asyncio.create_task(
            agent.session.post(
                f"{agent.url}/api/run", json=slow_prompt(15), headers={"task-id": "metered"}
            )
        )
        async with asyncio.timeout(20):
            while agent.services.runner.get("metered") is None:
                await asyncio.sleep(0.02)
        async with agent.session.ws_connect(agent.ws_url("/api/run/ws?id=metered")) as ws:
            await ws.receive_json(timeout=10)  # the watch is set up once a message arrives
            _, during = await scrape(agent)
            assert value(during, "comfyui_agent_websocket_watchers", mode="watch") == 1
            assert value(during, "comfyui_agent_queue_depth") == 1
        response = await run
        assert response.status == 200
        response.release()

        _, after = await scrape(agent)
        assert value(after, "comfyui_agent_runs_total", outcome="succeeded") == 1
        assert value(after, "comfyui_agent_run_duration_seconds_count") == 1
        assert value(after, "comfyui_agent_queue_wait_seconds_count") == 1
        # The agent's own part of the sync run, before the post and after ComfyUI's end:
        # both measured once, each a sliver of the run (15 steps of 0.02 s in ComfyUI).
        run_seconds = value(after, "comfyui_agent_run_duration_seconds_sum")
        for phase in ("before_submit", "after_end"):
            count = value(after, "comfyui_agent_sync_overhead_seconds_count", phase=phase)
            spent = value(after, "comfyui_agent_sync_overhead_seconds_sum", phase=phase)
            assert count == 1 and 0 < spent < run_seconds / 4, (phase, spent, run_seconds)
        assert value(after, "comfyui_agent_store_writes_total") > 0
        assert value(after, "comfyui_agent_queue_depth") == 0
        # The answer's one image, read from the fake's output directory one way or the other.
        reads = [
            value(after, "comfyui_agent_output_reads_total", way=w) for w in ("cache", "thread")
        ]
        assert sum(reads) == 1, reads
        for node_type in ("EmptyImage", "SlowCounter", "SaveImage"):
            count = value(after, "comfyui_agent_node_execution_seconds_count", node_type=node_type)
            assert count == 1, node_type
        # 15 steps of the fake's 0.02 s each.
        slow = value(after, "comfyui_agent_node_execution_seconds_sum", node_type="SlowCounter")
        assert slow >= 0.25
        async with asyncio.timeout(5):
            while True:
                _, closed = await scrape(agent)
                if value(closed, "comfyui_agent_websocket_watchers", mode="watch") == 0:
                    break
                await asyncio.sleep(0.05)

"""The progress maths of the client's display: agent/client/progress_view.py (pure)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.client.progress_view import line_key, node_titles, snapshot


def node(value: int = 0, max: int = 0, start: int = 0, cached: bool = False) -> dict[str, Any]:
    return {
        "value": value,
        "max": max,
        "start": start,
        "last_updated": start,
        "images": None,
        "cached": cached,
    }


TITLES = {"1": "Load", "2": "KSampler", "3": "Save"}


def test_titles_prefer_meta_title_then_class_type() -> None:
    workflow = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {}},
        "2": {"class_type": "KSampler", "inputs": {}, "_meta": {"title": "Sampler (fast)"}},
        "3": {"class_type": "SaveImage", "inputs": {}, "_meta": {"title": "  "}},
        "4": {"inputs": {}},
        "5": "junk",
    }
    assert node_titles(workflow) == {
        "1": "CheckpointLoaderSimple",
        "2": "Sampler (fast)",
        "3": "SaveImage",
        "4": "#4",
        "5": "#5",
    }


def test_nothing_started() -> None:
    snap = snapshot({"1": node(), "2": node(), "3": node()}, TITLES)
    assert (snap.total, snap.done, snap.fraction, snap.current, snap.cached) == (3, 0, 0, None, ())
    assert line_key(snap) is None


def test_a_running_sampler_adds_its_steps() -> None:
    progress = {"1": node(1, 1, 100), "2": node(5, 20, 101), "3": node()}
    snap = snapshot(progress, TITLES)
    assert snap.done == 1
    assert snap.fraction == pytest.approx((1 + 5 / 20) / 3)
    assert snap.percent == 41
    assert snap.current is not None
    assert (snap.current.id, snap.current.title, snap.current.value, snap.current.max) == (
        "2",
        "KSampler",
        5,
        20,
    )
    assert line_key(snap) == ("2", 2)


def test_cached_nodes_count_as_done_and_are_listed() -> None:
    progress = {"1": node(1, 1, 100, cached=True), "2": node(0, 1, 101), "3": node()}
    snap = snapshot(progress, TITLES)
    assert [view.id for view in snap.cached] == ["1"]
    assert snap.cached[0].title == "Load"
    assert snap.done == 1
    assert snap.current is not None and snap.current.id == "2"


def test_the_current_node_is_the_latest_started_unfinished_one() -> None:
    progress = {"1": node(1, 1, 100), "2": node(3, 10, 102), "3": node(0, 1, 101)}
    snap = snapshot(progress, TITLES)
    assert snap.current is not None and snap.current.id == "2"


def test_all_done_is_one_hundred_percent_and_no_current_node() -> None:
    progress = {"1": node(1, 1, 1), "2": node(20, 20, 2), "3": node(1, 1, 3)}
    snap = snapshot(progress, TITLES)
    assert (snap.fraction, snap.percent, snap.current, snap.done) == (1.0, 100, None, 3)


def test_unknown_titles_and_junk_entries() -> None:
    snap = snapshot({"7": node(0, 4, 5), "8": "junk", "9": {"value": "x", "max": True}}, {})
    assert snap.total == 2
    assert snap.current is not None and snap.current.title == "#7"


def test_empty_map() -> None:
    snap = snapshot({}, {})
    assert (snap.total, snap.fraction, snap.percent) == (0, 0.0, 0)


nodes = st.dictionaries(
    st.integers(1, 40).map(str),
    st.builds(
        node,
        value=st.integers(-5, 60),
        max=st.integers(-5, 60),
        start=st.integers(0, 5),
        cached=st.booleans(),
    ),
    max_size=12,
)


@given(nodes)
def test_fraction_is_the_mean_of_node_fractions(progress: dict[str, dict[str, Any]]) -> None:
    snap = snapshot(progress, {})
    assert 0.0 <= snap.fraction <= 1.0
    assert 0 <= snap.percent <= 100
    done = [n for n in progress.values() if n["max"] > 0 and n["value"] >= n["max"]]
    assert snap.done == len(done)
    if progress:
        expected = sum(
            min(max(n["value"], 0) / n["max"], 1.0) if n["max"] > 0 else 0.0
            for n in progress.values()
        ) / len(progress)
        assert snap.fraction == pytest.approx(expected)
    assert (snap.percent == 100) == (bool(progress) and snap.done == len(progress))
    if snap.current is not None:
        assert not snap.current.done and progress[snap.current.id]["start"] > 0
        assert progress[snap.current.id]["start"] == max(
            n["start"]
            for n in progress.values()
            if n["start"] > 0 and not (n["max"] > 0 and n["value"] >= n["max"])
        )
    assert all(view.cached and view.done for view in snap.cached)


@given(st.integers(1, 500))
def test_plain_lines_per_node_are_at_most_eleven(steps: int) -> None:
    keys = {line_key(snapshot({"2": node(value, steps, 1)}, {})) for value in range(steps)}
    assert len(keys) <= 11

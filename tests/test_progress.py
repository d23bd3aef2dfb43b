"""ProgressTracker against real ComfyUI 0.3.64 recordings (DESIGN.md, "Progress map").

Every recorded websocket trace is replayed through the tracker with `now` = BASE + the
frame's time, checking the DESIGN rules per scenario and, after every single `apply`, the
invariants (value <= max, ints, max >= 1 once started, `apply` is True exactly when some
visible state changed). Hypothesis then adds junk, duplicates and arbitrary messages, and
the `/history` fallback is checked with the websocket cut at every position.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.progress import FILE_OUTPUT_KEYS, Outcome, ProgressTracker
from comfyui.events import (
    TERMINAL_EVENTS,
    ComfyEvent,
    Executing,
    Progress,
    ProgressState,
    UnknownEvent,
    parse_event,
)
from store.records import NodeProgress, OutputFile
from tests.trace_tools import TRACES_DIR

TRACES = TRACES_DIR

# Fractional on purpose: frames 0.25 s after the socket opened fall into the next unix
# second, so `start` / `last_updated` (int seconds) really depend on which frame set them.
BASE = 1_700_000_000.75
FOREIGN = "00000000-0000-4000-8000-00000000f0e1"


# -- loading the recordings ------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """One recorded websocket frame; binary frames keep their record as `msg`."""

    t: float
    msg: Any
    event: ComfyEvent
    binary: bool = False

    @property
    def now(self) -> float:
        return BASE + self.t


def _read_json(name: str) -> Any:
    return json.loads((TRACES / name).read_text())


@cache
def frames_of(trace: str) -> tuple[Frame, ...]:
    """The trace's frames; `reconnect` is its first and second socket, concatenated."""
    single = TRACES / f"{trace}.ws.jsonl"
    paths = (
        [single]
        if single.exists()
        else [TRACES / f"{trace}.{p}.ws.jsonl" for p in ("first", "second")]
    )
    frames = []
    for path in paths:
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if record.get("binary"):
                # Not progress: the tracker must ignore whatever parse_event makes of it.
                frames.append(Frame(record["t"], record, parse_event(record), binary=True))
            else:
                frames.append(Frame(record["t"], record["msg"], parse_event(record["msg"])))
    return tuple(frames)


@cache
def prompt_ids(trace: str) -> tuple[str, ...]:
    """Prompt ids in posting order, from the recorded POST /prompt answers."""
    calls = _read_json(f"{trace}.post.json")
    return tuple(
        c["body"]["prompt_id"]
        for c in calls
        if c["label"].startswith("POST /prompt") and c["status"] == 200
    )


# -- what each recorded run must end as -------------------------------------------------------


def _done(*node_ids: str) -> dict[str, tuple[int, int]]:
    return dict.fromkeys(node_ids, (1, 1))


def _image(filename: str, kind: str = "output") -> list[dict[str, str]]:
    return [{"filename": filename, "subfolder": "", "type": kind}]


@dataclass(frozen=True)
class Run:
    """One prompt of one trace and the DESIGN outcome its replay must reach."""

    trace: str
    outcome: Outcome | None
    ran: dict[str, tuple[int, int]]  # nodes that started -> final (value, max)
    images: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    cached: frozenset[str] = frozenset()
    error: dict[str, Any] | None = None  # type, message, node_id, node_type, + details keys
    which: str | None = None  # "first" / "second" for the queue_* traces
    history_outcome: Outcome | None = None  # when the websocket never says (no_client_id)

    @property
    def id(self) -> str:
        return f"{self.trace}.{self.which}" if self.which else self.trace

    @property
    def prompt_id(self) -> str:
        return prompt_ids(self.trace)[1 if self.which == "second" else 0]

    @property
    def node_ids(self) -> list[str]:
        prompt = _read_json(f"{self.trace}.prompt.json")
        return list(prompt[self.which] if self.which else prompt)

    @property
    def frames(self) -> tuple[Frame, ...]:
        return frames_of(self.trace)

    @property
    def history(self) -> dict[str, Any] | None:
        entry: dict[str, Any] | None = _read_json(f"{self.trace}.history.json").get(self.prompt_id)
        return entry

    @property
    def final_outcome(self) -> Outcome | None:
        return self.history_outcome or self.outcome


SLOW = ("1", "2", "9")  # EmptyImage -> SlowCounter / FailAfter -> SaveImage
TXT2IMG = ("4", "6", "7", "5", "3", "8", "9")
TXT2IMG_WARM = ("4", "6", "7", "5")  # cached again after the first txt2img run

RUNS = [
    Run(
        "success", Outcome.SUCCEEDED, _done("1", "2", "3"), {"3": _image("cref_success_00001_.png")}
    ),
    Run(
        "success_cached",
        Outcome.SUCCEEDED,
        {},
        {"3": _image("cref_success_00001_.png")},
        cached=frozenset({"1", "2", "3"}),
    ),
    Run(
        "load_image",
        Outcome.SUCCEEDED,
        _done("1", "2", "3"),
        {
            "2": _image("cref_loadimage_00001_.png"),
            "3": _image("ComfyUI_temp_kkeni_00001_.png", "temp"),  # PreviewImage
        },
    ),
    Run(
        "runtime_error",
        Outcome.FAILED,
        {"1": (1, 1), "2": (0, 1)},
        error={
            "type": "execution_error",
            "message": "Invalid input thresholds. low_threshold should be smaller than or equal "
            "to the high_threshold. Got: 0.9>0.1",
            "node_id": "2",
            "node_type": "Canny",
            "exception_type": "kornia.core.exceptions.BaseError",
            "executed": ["1"],
        },
    ),
    Run(
        "runtime_error_custom",
        Outcome.FAILED,
        {"1": (1, 1), "2": (3, 4)},  # FailAfter keeps its 3 of 4
        error={
            "type": "execution_error",
            "message": "cref FailAfter: deliberate failure after 3 steps",
            "node_id": "2",
            "node_type": "FailAfter",
            "exception_type": "RuntimeError",
            "executed": ["1"],
        },
    ),
    Run(
        "progress",
        Outcome.SUCCEEDED,
        {**_done(*SLOW), "2": (10, 10)},
        {"9": _image("cref_progress_00001_.png")},
    ),
    *(
        Run(
            trace,
            Outcome.INTERRUPTED,
            {"1": (1, 1), "2": (at, 50)},
            error={
                "type": "interrupted",
                "node_id": "2",
                "node_type": "SlowCounter",
                "executed": ["1"],
            },
        )
        for trace, at in (("interrupt", 10), ("interrupt_global", 5))
    ),
    *(
        Run(
            "queue_two",
            Outcome.SUCCEEDED,
            {**_done(*SLOW), "2": (5, 5)},
            {"9": _image(f)},
            which=which,
        )
        for which, f in (("first", "cref_q_a_00001_.png"), ("second", "cref_q_b_00001_.png"))
    ),
    Run(
        "queue_delete",
        Outcome.SUCCEEDED,
        {**_done(*SLOW), "2": (8, 8)},
        {"9": _image("cref_qd_a_00001_.png")},
        which="first",
    ),
    Run("queue_delete", None, {}, which="second"),  # deleted while pending: never runs
    # No client_id: only progress / progress_state reach the socket, never an outcome
    # (and no `executed`, so no images): the run has to end through /history.
    Run("no_client_id", None, {**_done(*SLOW), "2": (3, 3)}, history_outcome=Outcome.SUCCEEDED),
    Run(
        "reconnect",
        Outcome.SUCCEEDED,
        {**_done(*SLOW), "2": (15, 15)},
        {"9": _image("cref_reconnect_00001_.png")},
    ),
    Run(
        "txt2img",
        Outcome.SUCCEEDED,
        {**_done(*TXT2IMG), "3": (3, 3)},
        {"9": _image("cref_txt2img_00001_.png")},
    ),
    Run(
        "txt2img_newseed",
        Outcome.SUCCEEDED,
        {**_done("8", "9"), "3": (3, 3)},
        {"9": _image("cref_txt2img_00002_.png")},
        cached=frozenset(TXT2IMG_WARM),
    ),
    Run(
        "txt2img_full",
        Outcome.SUCCEEDED,
        {**_done("4", "6", "7", "8", "9"), "3": (3, 3)},
        {"9": _image("cref_txt2img_full_00001_.png")},
        cached=frozenset({"5"}),
    ),
    Run(
        "txt2img_preview",
        Outcome.SUCCEEDED,
        {**_done(*TXT2IMG), "3": (4, 4)},
        {"9": _image("cref_txt2img_pv_00001_.png")},
    ),
    Run(
        "txt2img_preview_meta",
        Outcome.SUCCEEDED,
        {**_done("8", "9"), "3": (4, 4)},
        {"9": _image("cref_txt2img_pvm_00001_.png")},
        cached=frozenset(TXT2IMG_WARM),
    ),
]
RUN_PARAMS = [pytest.param(run, id=run.id) for run in RUNS]
HISTORY_RUNS = [pytest.param(run, id=run.id) for run in RUNS if run.history is not None]

# Traces (or sockets) that see no execution at all: observers and rejected prompts.
QUIET_TRACES = sorted(
    p.name.removesuffix(".ws.jsonl")
    for p in TRACES.glob("*.ws.jsonl")
    if not any('"executing"' in line or '"progress' in line for line in p.read_text().splitlines())
)


def test_every_recorded_execution_is_covered() -> None:
    """A new recording with executions must get an expectation here."""
    recorded = {
        p.name.split(".")[0]
        for p in TRACES.glob("*.ws.jsonl")
        if p.name.removesuffix(".ws.jsonl") not in QUIET_TRACES
    }
    assert recorded == {run.trace for run in RUNS}
    for trace in {run.trace for run in RUNS}:
        runs = [run for run in RUNS if run.trace == trace]
        assert len(runs) == len(prompt_ids(trace)), trace


# -- helpers ---------------------------------------------------------------------------------


def visible(tracker: ProgressTracker) -> tuple[Any, ...]:
    """Everything a caller can see of the tracker (a deep copy)."""
    return (
        {node_id: node.model_dump() for node_id, node in tracker.nodes.items()},
        copy.deepcopy(tracker.outputs),
        tracker.outcome,
        tracker.error.model_dump() if tracker.error else None,
        tracker.started,
        tracker.ended,
        tracker.finished,
    )


def check_invariants(tracker: ProgressTracker) -> None:
    for node_id, node in tracker.nodes.items():
        for name in ("value", "max", "start", "last_updated"):
            assert type(getattr(node, name)) is int, (node_id, name)
        assert 0 <= node.value <= node.max, (node_id, node)
        if node.start:
            assert node.max >= 1, (node_id, node)
            assert node.last_updated >= node.start, (node_id, node)
    assert tracker.finished == (tracker.outcome is not None)
    assert not tracker.ended or tracker.finished
    assert (tracker.error is None) == (tracker.outcome in (None, Outcome.SUCCEEDED))


def apply_checked(tracker: ProgressTracker, event: ComfyEvent, now: float) -> bool:
    """apply(), asserting its answer is exactly "something visible changed"."""
    before = visible(tracker)
    changed = tracker.apply(event, now)
    after = visible(tracker)
    assert changed == (after != before), event
    if event.event_prompt_id != tracker.prompt_id:
        assert not changed, event
    check_invariants(tracker)
    return changed


def replay(run: Run, frames: Iterable[Frame] | None = None) -> ProgressTracker:
    tracker = ProgressTracker(run.node_ids, run.prompt_id)
    for frame in run.frames if frames is None else frames:
        apply_checked(tracker, frame.event, frame.now)
    return tracker


def images_of(tracker: ProgressTracker) -> dict[str, list[dict[str, Any]]]:
    return {
        node_id: [f.model_dump() for f in node.images]
        for node_id, node in tracker.nodes.items()
        if node.images is not None
    }


def is_terminal_for(event: ComfyEvent, prompt_id: str) -> bool:
    return event.event_prompt_id == prompt_id and (
        isinstance(event, TERMINAL_EVENTS) or (isinstance(event, Executing) and event.node is None)
    )


def first_start(run: Run, node_id: str) -> float:
    """Time of the first frame saying node_id runs (executing, progress or running state)."""
    for frame in run.frames:
        event = frame.event
        if event.event_prompt_id != run.prompt_id:
            continue
        if isinstance(event, Executing | Progress) and event.node == node_id:
            return frame.t
        if isinstance(event, ProgressState):
            state = event.nodes.get(node_id)
            if state is not None and state.state == "running":
                return frame.t
    raise AssertionError(f"{node_id} never starts in {run.trace}")


# -- 1. replaying every recording ------------------------------------------------------------


@pytest.mark.parametrize("run", RUN_PARAMS)
def test_replay_follows_design(run: Run) -> None:
    tracker = ProgressTracker(run.node_ids, run.prompt_id)
    assert set(tracker.nodes) == set(run.node_ids)
    assert all(node == NodeProgress() for node in tracker.nodes.values())
    over = ended = False
    for frame in run.frames:
        apply_checked(tracker, frame.event, frame.now)
        over |= is_terminal_for(frame.event, run.prompt_id)
        ended |= (
            isinstance(frame.event, Executing)
            and frame.event.node is None
            and (frame.event.prompt_id == run.prompt_id)
        )
        assert tracker.finished == over, frame.msg  # no outcome before ComfyUI says so
        assert tracker.ended == ended, frame.msg  # ended only after executing null

    assert tracker.outcome == run.outcome
    assert tracker.started == (run.outcome is not None)
    # Every node of the workflow has an entry, and only those.
    assert set(tracker.nodes) == set(run.node_ids)
    for node_id, node in tracker.nodes.items():
        if node_id in run.cached:
            assert node.cached and node.value == node.max == 1, node_id
            assert node.start == 0 and node.last_updated > 0, node_id
        elif node_id in run.ran:
            assert (node.value, node.max) == run.ran[node_id], node_id
            assert not node.cached
            assert node.start == int(BASE + first_start(run, node_id)), node_id
            assert node.start <= node.last_updated <= int(BASE + run.frames[-1].t), node_id
        else:  # never ran: zeros
            assert node == NodeProgress(), node_id
        if run.outcome is Outcome.SUCCEEDED and (node_id in run.ran or node_id in run.cached):
            assert node.value == node.max >= 1, node_id
    # Images of every output node (SaveImage and PreviewImage), and the raw outputs.
    assert images_of(tracker) == run.images
    assert tracker.outputs == {node_id: {"images": files} for node_id, files in run.images.items()}

    if run.error is None:
        assert tracker.error is None
    else:
        assert tracker.error is not None
        expected = dict(run.error)
        for key in ("type", "node_id", "node_type"):
            assert getattr(tracker.error, key) == expected.pop(key)
        if "message" in expected:
            assert tracker.error.message == expected.pop("message")
        else:
            assert tracker.error.message
        details = tracker.error.details
        assert isinstance(details, dict)
        assert {k: details[k] for k in expected} == expected
        if "exception_type" in expected:
            assert details["traceback"]  # kept for the task record


@pytest.mark.parametrize("run", RUN_PARAMS)
def test_foreign_and_broadcast_frames_change_nothing(run: Run) -> None:
    """status, other prompts' events and binary previews never count (checked per frame)."""
    tracker = ProgressTracker(run.node_ids, run.prompt_id)
    ignored = 0
    for frame in run.frames:
        event = frame.event
        changed = apply_checked(tracker, event, frame.now)
        if frame.binary or event.event_prompt_id != run.prompt_id:
            assert not changed, frame.msg
            ignored += 1
    # Every trace starts with the connection's status; the queue_* ones hold other prompts.
    assert ignored >= 3


@pytest.mark.parametrize("trace", QUIET_TRACES)
def test_quiet_sockets_leave_the_map_untouched(trace: str) -> None:
    """Observers and rejected prompts: only `status` arrives, nothing may change."""
    frames = frames_of(trace)
    assert frames
    tracker = ProgressTracker(["1", "2", "3"], FOREIGN)
    initial = visible(tracker)
    for frame in frames:
        assert not apply_checked(tracker, frame.event, frame.now)
    assert visible(tracker) == initial


def test_duplicate_status_returns_false() -> None:
    run = RUNS[0]
    tracker = ProgressTracker(run.node_ids, run.prompt_id)
    statuses = [f for f in run.frames if f.msg.get("type") == "status"]
    # POST /prompt on an idle server: two identical status messages (queue_remaining 1).
    assert statuses[1].msg == statuses[2].msg
    assert [tracker.apply(f.event, f.now) for f in statuses] == [False] * len(statuses)


def test_queue_two_prompts_are_tracked_separately() -> None:
    """Both trackers see the whole socket; each one ends with only its own prompt's data."""
    first, second = (next(r for r in RUNS if r.id == f"queue_two.{w}") for w in ("first", "second"))
    trackers = [ProgressTracker(r.node_ids, r.prompt_id) for r in (first, second)]
    for frame in first.frames:
        answers = [apply_checked(t, frame.event, frame.now) for t in trackers]
        assert not all(answers)  # no event is for both prompts
    assert [t.outcome for t in trackers] == [Outcome.SUCCEEDED] * 2
    assert images_of(trackers[0]) == first.images != images_of(trackers[1]) == second.images
    # The second prompt started after the first ended.
    assert trackers[1].nodes["1"].start >= trackers[0].nodes["9"].last_updated


def test_reconnect_keeps_progress_across_the_gap() -> None:
    """Messages sent while disconnected are lost; the map jumps from 3 to 6 of 15."""
    run = next(r for r in RUNS if r.trace == "reconnect")
    tracker = ProgressTracker(run.node_ids, run.prompt_id)
    seen = []
    for frame in run.frames:
        apply_checked(tracker, frame.event, frame.now)
        seen.append(tracker.nodes["2"].value)
    assert 3 in seen and 6 in seen and not {4, 5} & set(seen)
    # `executing {"node": "2"}` without prompt_id on the new socket is not this prompt's.
    bare = next(
        f for f in run.frames if isinstance(f.event, Executing) and f.event.prompt_id is None
    )
    assert bare.event.node == "2"


@pytest.mark.parametrize(
    ("run", "drop"),
    [
        pytest.param(run, drop, id=f"{run.id}-without-{drop.__name__}")
        for run in RUNS
        if run.ran
        for drop in (Progress, ProgressState)
        # Without progress_state, no_client_id has almost nothing left.
        if not (drop is ProgressState and run.trace == "no_client_id")
    ],
)
def test_progress_and_progress_state_each_suffice(run: Run, drop: type) -> None:
    """Ints from ProgressBar (`progress`) and floats from `progress_state` give one map."""
    tracker = replay(run, [f for f in run.frames if not isinstance(f.event, drop)])
    for node_id, expected in run.ran.items():
        assert (tracker.nodes[node_id].value, tracker.nodes[node_id].max) == expected, node_id
    assert tracker.outcome == run.outcome


def test_recordings_mix_int_and_float_progress() -> None:
    """Precondition of the test above: both number kinds really reach the tracker (whose
    map holds ints only, checked after every apply)."""
    kinds = {
        (frame.msg["type"], type(value))
        for run in RUNS
        for frame in run.frames
        if not frame.binary and frame.msg["type"] in ("progress", "progress_state")
        for value in (
            [frame.msg["data"]["value"]]
            if frame.msg["type"] == "progress"
            else [s["value"] for s in frame.msg["data"]["nodes"].values()]
        )
    }
    assert kinds == {("progress", int), ("progress_state", int), ("progress_state", float)}


# -- 2. order and robustness -----------------------------------------------------------------

KNOWN_TYPES = [
    "status",
    "execution_start",
    "execution_cached",
    "executing",
    "progress",
    "progress_state",
    "executed",
    "execution_success",
    "execution_error",
    "execution_interrupted",
]


def _reprompt(value: Any, prompt_id: str) -> Any:
    """A copy of a message with every prompt_id replaced."""
    if isinstance(value, dict):
        return {
            k: prompt_id if k == "prompt_id" else _reprompt(v, prompt_id) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_reprompt(v, prompt_id) for v in value]
    return value


@cache
def _foreign_messages(prompt_id: str) -> tuple[Any, ...]:
    """Every recorded message that names a prompt, moved to another prompt."""
    messages = []
    for run in RUNS:
        for frame in run.frames:
            data = frame.msg.get("data") if not frame.binary else None
            if isinstance(data, dict) and "prompt_id" in data:
                foreign = data["prompt_id"] if data["prompt_id"] != prompt_id else FOREIGN
                messages.append(_reprompt(frame.msg, foreign))
    return tuple(messages)


@cache
def _binary_records() -> tuple[Any, ...]:
    return tuple(f.msg for run in RUNS for f in run.frames if f.binary)


json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)
not_a_dict = json_scalars | st.lists(json_values, max_size=3)
words = st.text(alphabet="abcxyz ", min_size=1, max_size=5)  # never parse as a number


def junk(run: Run) -> st.SearchStrategy[Any]:
    """Messages that must not change this run's tracker, whatever their shape."""
    pid = run.prompt_id
    node = st.sampled_from(run.node_ids)
    odd = st.one_of(
        st.builds(
            lambda t, d: {"type": t, "data": d}, st.sampled_from(KNOWN_TYPES[1:]), not_a_dict
        ),
        st.builds(
            lambda d: {"data": {**d, "prompt_id": pid}},
            st.dictionaries(st.text(max_size=4), json_values),
        ),
        st.builds(lambda t: {"type": t, "data": {"prompt_id": pid}}, st.integers() | st.none()),
        st.builds(
            lambda n: {
                "type": "progress_state",
                "data": {"prompt_id": pid, "nodes": [{"node_id": n, "state": "finished"}]},
            },
            node,
        ),
        st.builds(
            lambda n, v, m: {
                "type": "progress",
                "data": {"prompt_id": pid, "node": n, "value": v, "max": m},
            },
            node,
            words,
            words | st.integers(1, 9),
        ),
        st.builds(
            lambda n, v: {
                "type": "progress_state",
                "data": {
                    "prompt_id": pid,
                    "nodes": {n: {"value": v, "max": 9, "state": "running"}},
                },
            },
            node,
            words,
        ),
        st.builds(
            lambda o: {"type": "executed", "data": {"prompt_id": pid, "output": o}}, json_values
        ),
        st.builds(
            lambda n: {"type": "execution_cached", "data": {"prompt_id": pid, "nodes": n}},
            st.text(max_size=3) | st.integers(),
        ),
        # The reconnect shape: a node id without a prompt id is nobody's.
        st.builds(lambda n: {"type": "executing", "data": {"node": n}}, node | st.none()),
        st.builds(
            lambda n, v: {"type": "progress", "data": {"node": n, "value": v, "max": 99}},
            node,
            st.integers(0, 99),
        ),
        not_a_dict,
    )
    unknown = st.builds(
        lambda t, d: {"type": t, "data": {**d, "prompt_id": pid}},
        st.text(max_size=12).filter(lambda t: t not in KNOWN_TYPES),
        st.dictionaries(st.text(max_size=4), json_values, max_size=3),
    )
    status = st.builds(lambda d: {"type": "status", "data": d}, json_values) | st.sampled_from(
        [f.msg for f in run.frames if not f.binary and f.msg.get("type") == "status"]
    )
    return st.one_of(
        st.sampled_from(_foreign_messages(pid)),
        st.sampled_from(_binary_records()),
        odd,
        unknown,
        status,
    )


def _final(run: Run) -> tuple[Any, ...]:
    return visible(replay(run))


@pytest.mark.parametrize("run", RUN_PARAMS)
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_junk_interleaved_anywhere_changes_nothing(run: Run, data: st.DataObject) -> None:
    frames = run.frames
    inserts = data.draw(
        st.lists(st.tuples(st.integers(0, len(frames)), junk(run)), min_size=1, max_size=25)
    )
    at: dict[int, list[Any]] = {}
    for position, message in inserts:
        at.setdefault(position, []).append(message)
    tracker = ProgressTracker(run.node_ids, run.prompt_id)
    for i in range(len(frames) + 1):
        now = frames[max(i - 1, 0)].now
        for message in at.get(i, []):
            event = parse_event(message)
            assert not apply_checked(tracker, event, now), message
        if i < len(frames):
            apply_checked(tracker, frames[i].event, frames[i].now)
    assert visible(tracker) == _final(run)


@given(json_values)
def test_parse_event_never_raises_on_arbitrary_json(value: Any) -> None:
    assert isinstance(parse_event(value).type, str)


@given(st.sampled_from(KNOWN_TYPES) | st.text(max_size=8), json_values)
def test_parse_event_never_raises_on_typed_messages(kind: str, data: Any) -> None:
    event = parse_event({"type": kind, "data": data})
    assert event.type == kind or (isinstance(event, UnknownEvent) and event.type == "")


# Plausible-but-wild messages for one prompt: right types, any values (inf, nan, negative,
# value > max, unknown ids, expanded ids, odd outputs).
PID = "11111111-2222-4333-8444-555555555555"
NODES = ["1", "2", "3", "9"]
wild_numbers = st.integers(-(10**6), 10**6) | st.floats() | st.sampled_from([0, 1, 0.0, 1.0, 10])
wild_ids = st.sampled_from([*NODES, "2.0.1", "77"]) | st.text(max_size=3)
wild_state = st.fixed_dictionaries(
    {},
    optional={
        "value": wild_numbers,
        "max": wild_numbers,
        "state": st.sampled_from(["running", "finished", "pending", "error", ""]),
        "node_id": wild_ids,
        "display_node_id": wild_ids | st.none(),
    },
)
wild_file = st.fixed_dictionaries(
    {"filename": st.text(max_size=4)},
    optional={"subfolder": st.text(max_size=3), "type": st.sampled_from(["output", "temp"])},
)
wild_output = st.dictionaries(
    st.sampled_from([*FILE_OUTPUT_KEYS, "text", "latents"]),
    st.lists(wild_file | st.integers() | st.text(max_size=3), max_size=3) | st.text(max_size=3),
    max_size=3,
)
wild_data = st.fixed_dictionaries(
    {"prompt_id": st.just(PID)},
    optional={
        "node": wild_ids | st.none(),
        "value": wild_numbers,
        "max": wild_numbers,
        "nodes": st.dictionaries(wild_ids, wild_state, max_size=4) | st.lists(wild_ids, max_size=4),
        "output": wild_output | st.none(),
        "node_id": wild_ids,
        "node_type": st.text(max_size=5),
        "exception_message": st.text(max_size=8),
        "exception_type": st.text(max_size=8),
        "executed": st.lists(wild_ids, max_size=3),
    },
)
wild_messages = st.builds(
    lambda t, d: {"type": t, "data": d}, st.sampled_from(KNOWN_TYPES), wild_data
)


@settings(max_examples=200, deadline=None)
@given(st.lists(wild_messages, max_size=30))
def test_tracker_never_breaks_on_wild_messages(messages: list[Any]) -> None:
    tracker = ProgressTracker(NODES, PID)
    for i, message in enumerate(messages):
        apply_checked(tracker, parse_event(message), BASE + i * 0.4)
    assert set(NODES) <= set(tracker.nodes)


@pytest.mark.parametrize("run", RUN_PARAMS)
def test_duplicate_delivery_gives_the_same_state(run: Run) -> None:
    clean = _final(run)
    twice_each = replay(run, [f for f in run.frames for _ in range(2)])
    assert visible(twice_each) == clean
    whole_twice = replay(run, run.frames + run.frames)
    assert visible(whole_twice) == clean


# -- 3. history fallback ---------------------------------------------------------------------


@pytest.mark.parametrize("run", HISTORY_RUNS)
def test_history_completes_a_run_cut_anywhere(run: Run) -> None:
    entry = run.history
    assert entry is not None
    frames = run.frames
    full = replay(run)
    if run.outcome is not None:  # the socket alone gets the same result as history
        assert full.outputs == entry["outputs"]
    expected_images = {node_id: out["images"] for node_id, out in entry["outputs"].items()}
    assert expected_images == (run.images or expected_images)
    end = frames[-1].now + 1.0
    for cut in range(len(frames) + 1):
        tracker = replay(run, frames[:cut])
        before = visible(tracker)
        changed = tracker.apply_history(entry, end)
        assert changed == (visible(tracker) != before), cut
        check_invariants(tracker)
        assert tracker.outcome == run.final_outcome, cut
        assert tracker.ended and tracker.started, cut
        assert tracker.outputs == entry["outputs"], cut
        assert images_of(tracker) == expected_images, cut
        for node_id in run.cached:
            node = tracker.nodes[node_id]
            assert node.cached and node.value == node.max == 1, (cut, node_id)
        if run.error is not None:
            assert full.error is not None and tracker.error is not None
            assert tracker.error.model_dump() == full.error.model_dump(), cut
            # Nodes ComfyUI says finished before the failure are done, seen or not.
            for node_id in full.error.details["executed"]:
                assert tracker.nodes[node_id].done, (cut, node_id)
        if tracker.outcome is Outcome.SUCCEEDED:
            # Every node the outputs needed ran (or came from the cache), seen or not:
            # the same values as the full replay, whatever the socket missed.
            for node_id, node in full.nodes.items():
                assert (tracker.nodes[node_id].value, tracker.nodes[node_id].max) == (
                    node.value,
                    node.max,
                ) or node.max > 1, (cut, node_id)
                assert tracker.nodes[node_id].done == node.done, (cut, node_id)
        # History again, or the rest of the socket arriving late, changes nothing.
        settled = visible(tracker)
        assert not tracker.apply_history(entry, end + 1)
        for frame in frames[cut:]:
            assert not apply_checked(tracker, frame.event, frame.now), (cut, frame.msg)
        assert visible(tracker) == settled


def test_history_gives_no_client_id_its_images() -> None:
    run = next(r for r in RUNS if r.trace == "no_client_id")
    tracker = replay(run)
    assert tracker.outcome is None and not tracker.ended and not tracker.outputs
    assert tracker.apply_history(run.history or {}, BASE + 5)
    assert tracker.outcome is Outcome.SUCCEEDED
    assert images_of(tracker) == {"9": _image("cref_nocid_00001_.png")}


def _unfinished(entry: dict[str, Any], how: str) -> dict[str, Any]:
    entry = copy.deepcopy(entry)
    if how == "no-status":
        del entry["status"]
    else:
        status = entry["status"]
        status["completed"] = False
        status["messages"] = [
            m for m in status["messages"] if m[0] in ("execution_start", "execution_cached")
        ]
        status["status_str"] = None if how == "no-status-str" else "success"
    return entry


@pytest.mark.parametrize("how", ["no-status", "no-status-str", "success-not-completed"])
@pytest.mark.parametrize("run", HISTORY_RUNS)
def test_history_still_running_leaves_the_outcome_open(run: Run, how: str) -> None:
    entry = run.history
    assert entry is not None
    frames = [f for f in run.frames if not is_terminal_for(f.event, run.prompt_id)]
    for cut in (0, len(frames) // 2, len(frames)):
        tracker = replay(run, frames[:cut])
        tracker.apply_history(_unfinished(entry, how), frames[-1].now)
        check_invariants(tracker)
        assert tracker.outcome is None and not tracker.finished and not tracker.ended
        assert tracker.error is None
        if how != "no-status":  # execution_cached from the history still counts
            assert all(tracker.nodes[n].cached for n in run.cached)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["status", "outputs", "prompt", "meta", "x"]), json_values))
def test_history_of_any_shape_never_raises(entry: dict[str, Any]) -> None:
    tracker = ProgressTracker(NODES, PID)
    tracker.apply_history(entry, BASE)
    check_invariants(tracker)


# -- 4. rules not exercised by the recordings ------------------------------------------------


def _msg(kind: str, **data: Any) -> ComfyEvent:
    return parse_event({"type": kind, "data": {"prompt_id": PID, **data}})


@pytest.mark.parametrize("key", FILE_OUTPUT_KEYS)
def test_every_file_output_key_is_recorded(key: str) -> None:
    tracker = ProgressTracker(NODES, PID)
    files = [{"filename": "a.mp4", "subfolder": "v", "type": "output"}, {"no": "filename"}, 3]
    output = {key: files, "text": ["not a file"]}
    assert apply_checked(tracker, _msg("executed", node="9", output=output), BASE)
    assert tracker.nodes["9"].images == [OutputFile(filename="a.mp4", subfolder="v")]
    assert tracker.outputs["9"] == output
    node = tracker.nodes["9"]
    assert node.value == node.max == 1


def test_expanded_and_unknown_node_ids() -> None:
    tracker = ProgressTracker(NODES, PID)
    # Ids ComfyUI makes by expanding node 2 count for node 2; unknown ids get an entry.
    assert apply_checked(tracker, _msg("progress", node="2.0.1", value=2, max=5), BASE)
    assert (tracker.nodes["2"].value, tracker.nodes["2"].max) == (2, 5)
    assert apply_checked(tracker, _msg("executing", node="77"), BASE)
    assert tracker.nodes["77"].max == 1 and tracker.nodes["77"].start == int(BASE)


def test_progress_without_node_goes_to_the_running_node() -> None:
    tracker = ProgressTracker(NODES, PID)
    assert not apply_checked(tracker, _msg("progress", value=1, max=4), BASE)  # nobody runs
    apply_checked(tracker, _msg("executing", node="2"), BASE)
    assert apply_checked(tracker, _msg("progress", value=1, max=4), BASE + 1)
    assert (tracker.nodes["2"].value, tracker.nodes["2"].max) == (1, 4)


def test_next_node_completes_the_previous_one() -> None:
    tracker = ProgressTracker(NODES, PID)
    apply_checked(tracker, _msg("executing", node="1"), BASE)
    assert tracker.nodes["1"].value == 0
    apply_checked(tracker, _msg("executing", node="2"), BASE + 1)
    assert tracker.nodes["1"].value == tracker.nodes["1"].max == 1
    assert tracker.nodes["1"].last_updated == int(BASE + 1)

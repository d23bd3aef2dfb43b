"""Bad input at every entry point of the agent, against the fake ComfyUI as its real child.

Property-based: arbitrary JSON, raw bytes and plausible-but-random workflows POSTed to
/api/run and /api/tasks. The agent itself must refuse what is not an API-format workflow
(400, nothing stored, nothing queued); what it passes on may only end the documented ways:
success, ComfyUI's validation answer (400), an image input error (422) or an execution
error raised by a node at run time (500 `ExecutionError`, the one 5xx DESIGN.md allows for
a workflow that is the user's fault). Never an agent failure: no InternalError, no
`agent_error` task, no 502/503/504, no traceback in the log.

Explicit: each kind of bad body, bad task id, bad method, bad query value and bad websocket
message with the exact status and message a user sees.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from yarl import URL

from store.records import TaskStatus
from tests.agent_harness import AgentUnderTest, running_agent, trace_prompt
from tests.fake_comfyui import media

pytestmark = pytest.mark.asyncio(loop_scope="module")

MAX_BODY = 65536
RUN = "/api/run?results=none"
TASKS = "/api/tasks"
ENDPOINTS = [RUN, TASKS]
INVALID_TASK_ID = (
    "task id must be 1-128 characters of A-Z a-z 0-9 . _ - starting with a letter, digit or _"
)
# What a task passed on to ComfyUI may fail with when the workflow is the user's fault.
USER_FAULT_ERRORS = frozenset({"prompt_validation", "input_error", "execution_error"})
TINY_PNG_B64 = base64.b64encode(media.png_bytes(2, 2, (10, 20, 30))).decode()


# --- fixtures and helpers ------------------------------------------------------------------------


class AgentErrors(logging.Handler):
    """Collects ERROR records of the agent's own loggers (not ComfyUI's forwarded output)."""

    PREFIXES = ("agent", "store", "comfyui", "aiohttp", "asyncio")

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("comfyui.child"):
            return
        if record.name.split(".")[0] in self.PREFIXES:
            self.records.append(record)

    def since(self, start: int) -> list[str]:
        return [f"{r.name}: {r.getMessage()}" for r in self.records[start:]]


@pytest.fixture(scope="module")
def agent_errors() -> Iterator[AgentErrors]:
    handler = AgentErrors()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def agent(
    tmp_path_factory: pytest.TempPathFactory, agent_errors: AgentErrors
) -> AsyncIterator[AgentUnderTest]:
    flags = ["--max-body", str(MAX_BODY)]
    async with running_agent(tmp_path_factory.mktemp("bad-input"), flags=flags) as running:
        yield running


@pytest.fixture(scope="module")
def fuzz_tasks() -> list[str]:
    """Ids of the tasks the fuzz examples started through POST /api/tasks (checked at the end)."""
    return []


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    content_type: str
    text: str
    body: Any


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_answer(text: str, *, strict: bool) -> Any:
    """The answer's JSON; strict: NaN/Infinity (not JSON, RFC 8259) are refused too."""
    return json.loads(text, parse_constant=_no_constants) if strict else json.loads(text)


async def request(
    agent: AgentUnderTest,
    method: str,
    path: str,
    data: Any = None,
    headers: dict[str, str] | None = None,
    *,
    strict: bool = True,
    encoded: bool = False,
) -> Answer:
    """One request to the agent; the answer must be JSON."""
    url: str | URL = URL(agent.url + path, encoded=True) if encoded else agent.url + path
    async with agent.session.request(method, url, data=data, headers=headers or {}) as response:
        text = await response.text()
        answer = Answer(response.status, dict(response.headers), response.content_type, text, None)
    assert answer.content_type == "application/json", (method, path, answer)
    answer.body = parse_answer(text, strict=strict)
    return answer


def assert_error_shape(answer: Answer) -> None:
    assert isinstance(answer.body, dict), answer
    assert {"message", "error"} <= set(answer.body), answer
    assert isinstance(answer.body["message"], str) and answer.body["message"], answer


async def comfyui_state(agent: AgentUnderTest) -> tuple[int, int]:
    """(prompts queued or running, history entries) of the fake ComfyUI, asked directly."""
    async with agent.session.get(f"{agent.comfyui_url}/queue") as response:
        queue = await response.json()
    async with agent.session.get(f"{agent.comfyui_url}/history") as response:
        history = await response.json()
    return len(queue["queue_running"]) + len(queue["queue_pending"]), len(history)


def stored_files(agent: AgentUnderTest) -> set[str]:
    """Names of the task records in the agent's file store."""
    folder = Path(urlsplit(agent.settings.store).path)
    return {p.name for p in folder.glob("*.json")} if folder.exists() else set()


async def settle(agent: AgentUnderTest) -> tuple[int, int]:
    """Wait until no run is active here or in ComfyUI; its state (queue empty) then."""
    async with asyncio.timeout(30):
        while True:
            state = await comfyui_state(agent)
            if not agent.services.runner.active and state[0] == 0:
                return state
            await asyncio.sleep(0.05)


@dataclass
class Untouched:
    """Proof that a refused request changed nothing: no record, no prompt in ComfyUI."""

    agent: AgentUnderTest
    history: int
    files: set[str]

    @classmethod
    async def snapshot(cls, agent: AgentUnderTest) -> Untouched:
        _, history = await settle(agent)
        return cls(agent, history, stored_files(agent))

    async def check(self) -> None:
        queued, history = await comfyui_state(self.agent)
        assert queued == 0, "a refused request queued a prompt in ComfyUI"
        assert history == self.history, "a refused request ran a prompt in ComfyUI"
        assert stored_files(self.agent) == self.files, "a refused request stored a task"
        assert not self.agent.services.runner.active


def new_task_id() -> str:
    return f"bad-{uuid.uuid4().hex[:12]}"


def good_workflow(marker: str) -> dict[str, Any]:
    prompt = trace_prompt("success")
    prompt["3"]["inputs"]["filename_prefix"] = f"bad_input_{marker}"
    prompt["1"]["inputs"]["color"] = uuid.uuid4().int % 0xFFFFFF
    return prompt


# --- the documented contract, as an oracle -------------------------------------------------------

NOT_JSON = object()


def decode(raw: bytes) -> Any:
    """The body as the agent's JSON reading would see it, or NOT_JSON."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return NOT_JSON


def node_map(body: dict[str, Any]) -> dict[str, Any]:
    """The bare node map, or the one inside `{"prompt": {...}}` (ComfyUI's own request)."""
    prompt = body.get("prompt")
    if isinstance(prompt, dict) and not isinstance(prompt.get("class_type"), str):
        return prompt
    return body


def refusal(body: Any) -> str | None:
    """Why the agent itself must answer 400 (DESIGN: "400 bad body"); None: pass it on."""
    if body is NOT_JSON:
        return "not JSON"
    if not isinstance(body, dict):
        return "not an object"
    nodes = node_map(body)
    if not nodes:
        return "no nodes"
    for node in nodes.values():
        if not isinstance(node, dict):
            return "a node is not an object"
        class_type = node.get("class_type")
        if not isinstance(class_type, str) or not class_type:
            return "a node has no class_type"
        if not isinstance(node.get("inputs", {}), dict):
            return "a node's inputs are not an object"
    return None


def is_strict_json(value: Any) -> bool:
    """No NaN / Infinity anywhere (those are not JSON, though Python reads them)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(is_strict_json(v) for v in value)
    if isinstance(value, dict):
        return all(is_strict_json(v) for v in value.values())
    return True


async def check_property(
    agent: AgentUnderTest,
    errors: AgentErrors,
    endpoint: str,
    raw: bytes,
    created: list[str],
) -> None:
    """The property every fuzz example must have, whatever the body."""
    decoded = decode(raw)
    strict = decoded is NOT_JSON or is_strict_json(decoded)
    task_id = new_task_id()
    logged = len(errors.records)
    answer = await request(agent, "POST", endpoint, raw, {"task-id": task_id}, strict=strict)
    assert answer.status // 100 in (2, 4, 5), answer
    if answer.status >= 400:
        assert_error_shape(answer)
        event(f"{answer.status} {answer.body['message']}")
    else:
        event(str(answer.status))
    reason = refusal(decoded)
    if reason is not None:
        # The agent's own refusal: 400 before any task exists.
        assert answer.status == 400, (reason, answer)
        assert answer.body["message"] == "RequestParamsError", answer
        assert isinstance(answer.body["error"], str)
        assert answer.headers["X-Task-Id"] == task_id
        assert await agent.services.store.load(task_id) is None
        assert errors.since(logged) == []
        return
    nodes = node_map(decoded)
    if answer.status == 422:  # an image input that can't be used: refused or failed
        assert answer.body["message"] == "InputError", answer
        assert answer.body["error"]["type"] == "input_error", answer
    elif endpoint == TASKS:
        assert answer.status == 202, answer
        assert answer.body["task_id"] == task_id
        assert answer.headers["Location"] == f"/api/tasks/{task_id}"
        assert set(answer.body["progress"]) == set(nodes)
        created.append(task_id)
    else:
        await check_run_answer(agent, task_id, nodes, answer)
    assert errors.since(logged) == []


async def check_run_answer(
    agent: AgentUnderTest, task_id: str, nodes: dict[str, Any], answer: Answer
) -> None:
    """A finished /api/run of a workflow the agent passed on: only the documented outcomes."""
    body = answer.body
    record = await agent.services.store.load(task_id)
    assert record is not None and record.status.is_terminal, (answer, record)
    assert answer.headers["X-Task-Status"] == record.status.value
    if answer.status == 200:
        assert record.status is TaskStatus.SUCCEEDED
        assert set(body) == set(nodes)
        assert all({"max", "value", "images"} <= set(entry) for entry in body.values())
        return
    assert record.status is TaskStatus.FAILED and record.error is not None
    if answer.status == 400:
        # ComfyUI's validation answer, passed through.
        assert body["message"] == "CallComfyUIPromptError", answer
        assert set(body["error"]) >= {"error", "node_errors"}, answer
        assert record.error.type == "prompt_validation"
    elif answer.status == 500:
        # Accepted by ComfyUI, then a node raised at run time: an execution error by design.
        assert body["message"] == "ExecutionError", answer
        error = body["error"]
        assert error["type"] == "execution_error", answer
        assert nodes[error["node_id"]]["class_type"] == error["node_type"], answer
        assert error["message"] and "exception_type" in error["details"], answer
        assert record.error.type == "execution_error"
    else:
        pytest.fail(f"undocumented answer for a workflow ComfyUI got: {answer}")


# --- strategies ----------------------------------------------------------------------------------

# st.text() leaves out lone surrogates; those are covered by an explicit test below.
TEXT = st.text(max_size=12)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**200), max_value=2**200)
    | st.sampled_from([2**63, 2**64 + 1, -(2**63) - 1, 10**300])
    | st.floats(allow_nan=True, allow_infinity=True)
    | TEXT
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=16,
)
# Dicts whose values are sometimes node-like: reaches past the "is it an object" checks.
NODE_LIKE = st.fixed_dictionaries(
    {"class_type": TEXT.filter(bool) | SCALARS},
    optional={"inputs": st.dictionaries(TEXT, JSON_VALUES, max_size=3) | JSON_VALUES},
)
NEAR_WORKFLOWS = st.dictionaries(TEXT, NODE_LIKE, min_size=1, max_size=4) | st.dictionaries(
    TEXT, NODE_LIKE | JSON_VALUES, max_size=4
)
ARBITRARY_BODIES = JSON_VALUES | NEAR_WORKFLOWS | st.builds(lambda m: {"prompt": m}, NEAR_WORKFLOWS)

# Inputs the fake's nodes read at run time: kept out of random extra keys (a random valid
# SlowCounter delay or EmptyImage size could make one example run for minutes).
KNOWN_INPUTS = frozenset(
    {"width", "height", "batch_size", "color", "image", "images", "filename_prefix"}
    | {"steps", "delay", "ok_steps"}
)
BAD_INTS = st.sampled_from([0, -1, 16385, 2**70, "x", None, [], {}, float("nan"), "1e3"])
REAL_NODES = [
    "EmptyImage",
    "SaveImage",
    "PreviewImage",
    "LoadImage",
    "ImageInvert",
    "SlowCounter",
    "FailAfter",
]
IMAGE_VALUES = st.sampled_from(
    [
        "missing.png",
        "cat",
        "",
        "a b c",
        "!!!not base64!!!",
        "data:image/png;base64,AAAA",
        "data:text/plain,hello",
        "data:image/png;base64,not*base64",
        TINY_PNG_B64,
        "data:image/png;base64," + TINY_PNG_B64,
        base64.b64encode(b"GIF89a\x00\x00\x00\x00").decode(),
    ]
) | TEXT.filter(lambda s: "http" not in s.lower())


def link_values(ids: list[str]) -> st.SearchStrategy[Any]:
    """Links to nodes of the workflow (some to missing nodes or slots), or malformed ones."""
    good = st.builds(
        lambda node, slot: [node, slot],
        st.sampled_from([*ids, "missing"]),
        st.sampled_from([0, 0, 0, 1, 5, -1]),
    )
    bad = st.sampled_from([["1"], [1, 0], ["1", "0"], "1", None, [], [["1", 0], 0]])
    return good | bad


def maybe(
    inputs: dict[str, st.SearchStrategy[Any]],
) -> st.SearchStrategy[dict[str, Any]]:
    """Each known input present or absent."""
    return st.fixed_dictionaries({}, optional=inputs)


def node_inputs(class_type: str, link: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    small = st.sampled_from([1, 2, 8, 16]) | BAD_INTS
    spec: dict[str, dict[str, st.SearchStrategy[Any]]] = {
        "EmptyImage": {
            "width": small,
            "height": small,
            "batch_size": st.sampled_from([1, 2, 0, 4097, "b"]),
            "color": st.integers(0, 0xFFFFFF) | st.sampled_from([-1, 2**24, "red"]),
        },
        "SaveImage": {
            "images": link,
            "filename_prefix": TEXT
            | st.sampled_from(["fz", "sub/fz", "../up", "/abs", "%width%_%height%", "x" * 300]),
        },
        "PreviewImage": {"images": link},
        "LoadImage": {"image": IMAGE_VALUES},
        "ImageInvert": {"image": link},
        "SlowCounter": {
            "image": link,
            "steps": st.sampled_from([1, 2, 3, 0, -3, 10001, "x", None]),
            "delay": st.sampled_from([0.0, 0.005, -1.0, 61.0, "slow"]),
        },
        "FailAfter": {"image": link, "ok_steps": st.sampled_from([0, 1, -1, "z"])},
    }
    if class_type not in spec:
        return st.dictionaries(TEXT, SCALARS | link, max_size=3) | JSON_VALUES
    extra = st.dictionaries(TEXT.filter(lambda k: k not in KNOWN_INPUTS), SCALARS, max_size=2)
    return st.builds(lambda known, more: {**more, **known}, maybe(spec[class_type]), extra)


@st.composite
def plausible_workflows(draw: st.DrawFn) -> dict[str, Any]:
    """Node maps that look like ComfyUI "Save (API)" exports, with random content."""
    ids = draw(
        st.lists(
            st.sampled_from(["1", "2", "3", "4", "9", "10", "x", "é", "0"]) | TEXT,
            min_size=1,
            max_size=5,
            unique=True,
        )
    )
    link = link_values(ids)
    workflow: dict[str, Any] = {}
    for node_id in ids:
        class_type = draw(st.sampled_from(REAL_NODES) | TEXT | SCALARS)
        node: dict[str, Any] = {"class_type": class_type}
        if draw(st.integers(0, 9)) > 0:
            node["inputs"] = draw(node_inputs(str(class_type), link))
        if draw(st.booleans()):
            node["_meta"] = {"title": draw(TEXT)}
        workflow[node_id] = node
    shape = draw(st.sampled_from(["bare", "bare", "prompt", "prompt+extra"]))
    if shape == "prompt":
        return {"prompt": workflow}
    if shape == "prompt+extra":
        return {"prompt": workflow, "client_id": draw(TEXT), "extra_data": draw(JSON_VALUES)}
    return workflow


@st.composite
def valid_chain(draw: st.DrawFn) -> dict[str, Any]:
    """A workflow ComfyUI accepts (EmptyImage -> [ImageInvert|SlowCounter|FailAfter] -> Save)."""
    middle = draw(st.sampled_from(["ImageInvert", "SlowCounter", "FailAfter", None]))
    workflow: dict[str, Any] = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {
                "width": draw(st.sampled_from([1, 8])),
                "height": draw(st.sampled_from([1, 8])),
                "batch_size": 1,
                "color": draw(st.integers(0, 0xFFFFFF)),
            },
        }
    }
    source = ["1", 0]
    if middle is not None:
        inputs: dict[str, Any] = {"image": ["1", 0]}
        if middle == "SlowCounter":
            inputs.update(steps=draw(st.integers(1, 3)), delay=0.0)
        if middle == "FailAfter":
            inputs["ok_steps"] = draw(st.integers(0, 1))
        workflow["2"] = {"class_type": middle, "inputs": inputs}
        source = ["2", 0]
    prefix = draw(st.sampled_from(["fz", "fz/sub", "../outside", "x" * 300]) | TEXT)
    workflow["3"] = {
        "class_type": "SaveImage",
        "inputs": {"images": source, "filename_prefix": prefix},
    }
    return workflow


def as_body(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


RAW_BODIES = (
    st.binary(max_size=300)
    | st.binary(max_size=40).map(lambda b: b"\xff" + b + b"{}")
    | JSON_VALUES.map(lambda v: b"\xfe\xff" + as_body(v))
    | JSON_VALUES.map(lambda v: as_body(v)[: max(0, len(as_body(v)) - 1)])
    | TEXT.map(lambda t: t.encode("utf-16-le"))
)


def fuzz(max_examples: int) -> settings:
    """Example budget sized to keep the module well under a minute; no per-example deadline."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


# --- 1. property-based ---------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@fuzz(250)
@given(body=ARBITRARY_BODIES)
async def test_arbitrary_json_is_refused_or_run_the_documented_way(
    agent: AgentUnderTest,
    agent_errors: AgentErrors,
    fuzz_tasks: list[str],
    endpoint: str,
    body: Any,
) -> None:
    raw = as_body(body)
    assume("http" not in raw.decode().lower())  # no URL image inputs: loopback only
    await check_property(agent, agent_errors, endpoint, raw, fuzz_tasks)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@fuzz(150)
@given(workflow=plausible_workflows() | valid_chain())
async def test_plausible_workflows_are_refused_or_run_the_documented_way(
    agent: AgentUnderTest,
    agent_errors: AgentErrors,
    fuzz_tasks: list[str],
    endpoint: str,
    workflow: dict[str, Any],
) -> None:
    await check_property(agent, agent_errors, endpoint, as_body(workflow), fuzz_tasks)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@fuzz(150)
@given(raw=RAW_BODIES)
async def test_raw_bytes_are_refused_with_400(
    agent: AgentUnderTest,
    agent_errors: AgentErrors,
    fuzz_tasks: list[str],
    endpoint: str,
    raw: bytes,
) -> None:
    assume(refusal(decode(raw)) is not None)  # (a byte string that is a workflow: not here)
    await check_property(agent, agent_errors, endpoint, raw, fuzz_tasks)


async def test_agent_is_healthy_after_the_fuzzing(
    agent: AgentUnderTest, agent_errors: AgentErrors, fuzz_tasks: list[str]
) -> None:
    # Every background task the fuzzing started ended, the documented way.
    async with asyncio.timeout(30):
        for task_id in fuzz_tasks:
            while True:
                answer = await request(agent, "GET", f"/api/tasks/{task_id}", strict=False)
                assert answer.status == 200, answer
                if TaskStatus(answer.body["status"]).is_terminal:
                    break
                await asyncio.sleep(0.05)
            assert answer.body["status"] in ("succeeded", "failed"), answer
            if answer.body["status"] == "failed":
                assert answer.body["error"]["type"] in USER_FAULT_ERRORS, answer
    await settle(agent)
    health = await request(agent, "GET", "/healthz")
    assert health.status == 200
    ready = await request(agent, "GET", "/readyz")
    assert ready.status == 200 and ready.body["ready"] is True, ready
    status, _ = await run_good(agent, "after-fuzz")
    assert status == 200
    assert agent_errors.since(0) == []


async def run_good(agent: AgentUnderTest, marker: str) -> tuple[int, Any]:
    async with agent.session.post(f"{agent.url}/api/run", json=good_workflow(marker)) as response:
        body = await response.json()
    if response.status == 200:
        encoded = body["3"]["results"][0]
        assert base64.b64decode(encoded).startswith(b"\x89PNG")
    return response.status, body


# --- 2. explicit bad bodies ----------------------------------------------------------------------

NOT_OBJECT = "body must be a JSON object (the API-format workflow), not "
BAD_BODIES = [
    pytest.param(
        b"", "body is not valid JSON: Expecting value: line 1 column 1 (char 0)", id="empty"
    ),
    pytest.param(b"{not json", "body is not valid JSON: ", id="invalid-json"),
    pytest.param(b'{"1": {"class_type": "EmptyImage"}', "body is not valid JSON: ", id="truncated"),
    pytest.param(b"\xff\xfe\xfd{}", "body is not valid JSON: ", id="invalid-utf8"),
    pytest.param(b"[]", NOT_OBJECT + "an array", id="array"),
    pytest.param(b'[{"class_type": "SaveImage"}]', NOT_OBJECT + "an array", id="array-of-nodes"),
    pytest.param(b'"x"', NOT_OBJECT + "a string", id="string"),
    pytest.param(b"42", NOT_OBJECT + "a number", id="number"),
    pytest.param(b"-1.5e3", NOT_OBJECT + "a number", id="float"),
    pytest.param(b"null", NOT_OBJECT + "null", id="null"),
    pytest.param(b"true", NOT_OBJECT + "a boolean", id="bool"),
    pytest.param(b"{}", "workflow is empty: it has no nodes", id="empty-object"),
    pytest.param(b'{"prompt": {}}', "workflow is empty: it has no nodes", id="empty-prompt"),
    pytest.param(
        b'{"prompt": "x"}', "node 'prompt' must be an object, not a string", id="prompt-x"
    ),
    pytest.param(
        b'{"prompt": null}', "node 'prompt' must be an object, not null", id="prompt-null"
    ),
    pytest.param(b'{"1": []}', "node '1' must be an object, not an array", id="node-array"),
    pytest.param(b'{"1": "EmptyImage"}', "node '1' must be an object, not a string", id="node-str"),
    pytest.param(b'{"1": {}}', "node '1' has no class_type", id="node-empty"),
    pytest.param(b'{"1": {"inputs": {}}}', "node '1' has no class_type", id="no-class-type"),
    pytest.param(b'{"1": {"class_type": 7}}', "node '1' has no class_type", id="class-type-int"),
    pytest.param(
        b'{"1": {"class_type": null}}', "node '1' has no class_type", id="class-type-null"
    ),
    pytest.param(b'{"1": {"class_type": ""}}', "node '1' has no class_type", id="class-type-empty"),
    pytest.param(
        b'{"1": {"class_type": ["SaveImage"]}}', "node '1' has no class_type", id="class-type-list"
    ),
    pytest.param(
        b'{"1": {"class_type": "EmptyImage", "inputs": "x"}}',
        "node '1': inputs must be an object, not a string",
        id="inputs-str",
    ),
    pytest.param(
        b'{"1": {"class_type": "EmptyImage", "inputs": [1, 2]}}',
        "node '1': inputs must be an object, not an array",
        id="inputs-array",
    ),
    pytest.param(
        b'{"1": {"class_type": "EmptyImage", "inputs": null}}',
        "node '1': inputs must be an object, not null",
        id="inputs-null",
    ),
    pytest.param(
        # One good node does not save a workflow with a bad one: nothing of it runs.
        b'{"1": {"class_type": "EmptyImage", "inputs": {}}, "2": {"class_type": false}}',
        "node '2' has no class_type",
        id="good-then-bad-node",
    ),
    pytest.param(
        b'{"1": {"class_type": "EmptyImage", "inputs": {"width": ' + b"9" * 5000 + b"}}}",
        "body is not valid JSON: Exceeds the limit (4300 digits)",
        id="5000-digit-int",
    ),
    pytest.param(
        b" " * (MAX_BODY - 10),
        "body is not valid JSON: Expecting value",
        id="whitespace-under-max-body",
    ),
]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(("raw", "error"), BAD_BODIES)
async def test_bad_body_is_400_with_the_reason_and_changes_nothing(
    agent: AgentUnderTest, endpoint: str, raw: bytes, error: str
) -> None:
    untouched = await Untouched.snapshot(agent)
    task_id = new_task_id()
    answer = await request(agent, "POST", endpoint, raw, {"task-id": task_id})
    assert answer.status == 400, answer
    assert answer.body["message"] == "RequestParamsError"
    assert answer.body["error"].startswith(error), answer
    assert set(answer.body) == {"message", "error"}
    assert answer.headers["X-Task-Id"] == task_id
    assert await agent.services.store.load(task_id) is None
    await untouched.check()


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_body_over_max_body_with_content_length_is_413_unread(
    agent: AgentUnderTest, endpoint: str
) -> None:
    untouched = await Untouched.snapshot(agent)
    total = 10 * 2**20
    sent = 0

    async def whitespace() -> AsyncIterator[bytes]:
        nonlocal sent
        while sent < total:
            sent += 65536
            yield b" " * 65536

    task_id = new_task_id()
    headers = {"task-id": task_id, "Content-Length": str(total)}
    async with agent.session.post(agent.url + endpoint, data=whitespace(), headers=headers) as r:
        sent_when_answered = sent
        status, body = r.status, await r.json()
    assert status == 413
    assert body == {"message": "RequestTooLarge", "error": f"body is larger than {MAX_BODY} bytes"}
    assert sent_when_answered < total / 2, "the agent read the body before refusing it"
    assert await agent.services.store.load(task_id) is None
    await untouched.check()


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_chunked_body_over_max_body_is_413_long_before_its_end(
    agent: AgentUnderTest, endpoint: str
) -> None:
    untouched = await Untouched.snapshot(agent)
    total = 100 * 2**20
    sent = 0

    async def endless_whitespace() -> AsyncIterator[bytes]:
        nonlocal sent
        while sent < total:
            sent += 65536
            yield b" " * 65536

    task_id = new_task_id()
    started = time.monotonic()
    async with agent.session.post(
        agent.url + endpoint, data=endless_whitespace(), headers={"task-id": task_id}
    ) as response:
        assert "Content-Length" not in response.request_info.headers
        sent_when_answered = sent
        status, body = response.status, await response.json()
    assert status == 413, body
    assert body["message"] == "RequestTooLarge"
    # Loopback socket buffers hold a few MB; the agent must not read on to 100 MB.
    assert sent_when_answered < total / 4, sent_when_answered
    assert time.monotonic() - started < 5
    await untouched.check()


async def slow_chunks(data: bytes, size: int, pause: float) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]
        await asyncio.sleep(pause)


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "content-length"])
async def test_valid_body_arriving_in_pieces_runs(agent: AgentUnderTest, chunked: bool) -> None:
    raw = json.dumps(good_workflow("pieces")).encode()
    padded = raw[:-1] + b" " * (40_000 - len(raw)) + b"}"
    headers = {} if chunked else {"Content-Length": str(len(padded))}
    async with agent.session.post(
        agent.url + RUN, data=slow_chunks(padded, 8192, 0.05), headers=headers
    ) as response:
        status, body = response.status, await response.json()
    assert status == 200, body


async def test_slow_chunked_body_over_max_body_is_413(agent: AgentUnderTest) -> None:
    body = b" " * (4 * MAX_BODY)
    async with agent.session.post(agent.url + RUN, data=slow_chunks(body, 16384, 0.02)) as r:
        status, answer = r.status, await r.json()
    assert status == 413, answer
    assert answer["message"] == "RequestTooLarge"


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_deeply_nested_body_is_400(
    agent: AgentUnderTest, agent_errors: AgentErrors, endpoint: str
) -> None:
    logged = len(agent_errors.records)
    answer = await request(agent, "POST", endpoint, b"[" * 20_000 + b"]" * 20_000)
    assert answer.status == 400, answer
    assert answer.body["message"] == "RequestParamsError"
    assert agent_errors.since(logged) == []


async def test_deeply_nested_input_is_refused_or_passed_to_comfyui(
    agent: AgentUnderTest, agent_errors: AgentErrors
) -> None:
    logged = len(agent_errors.records)
    task_id = new_task_id()
    raw = b'{"1": {"class_type": "Nope", "inputs": {"a": ' + b"[" * 600 + b"]" * 600 + b"}}}"
    answer = await request(agent, "POST", RUN, raw, {"task-id": task_id})
    # Either the agent refuses the nesting, or ComfyUI says the node does not exist.
    assert answer.status == 400, answer
    assert answer.body["message"] in ("RequestParamsError", "CallComfyUIPromptError")
    assert agent_errors.since(logged) == []


async def test_lone_surrogate_in_an_input_still_stores_the_final_state(tmp_path: Path) -> None:
    async with running_agent(tmp_path) as isolated:
        workflow = good_workflow("surrogate")
        workflow["1"]["inputs"]["width"] = "\ud800"
        task_id = new_task_id()
        raw = json.dumps(workflow).encode()  # ensure_ascii: the JSON text is "\ud800"
        answer = await request(isolated, "POST", RUN, raw, {"task-id": task_id})
        assert answer.status == 400, answer
        assert "surrogate" in answer.body["error"]
        # Refused up front: nothing stored (it could never be serialised anyway).
        assert await isolated.services.store.load(task_id) is None


# --- 2. bad task ids -----------------------------------------------------------------------------

BAD_IDS = [
    pytest.param("..", id="dotdot"),
    pytest.param("a/b", id="slash"),
    pytest.param("x" * 200, id="200-chars"),
    pytest.param("-x", id="leading-dash"),
    pytest.param(".hidden", id="leading-dot"),
    pytest.param("a\x00b", id="nul"),
    pytest.param("é", id="unicode"),
    pytest.param("a b", id="space"),
    pytest.param("tâche-1", id="unicode-inside"),
]
ID_HEADERS = ["task-id", "X-Fc-Async-Task-Id", "X-Fc-Stateful-Async-Invocation-Id"]


async def raw_http(agent: AgentUnderTest, request_bytes: bytes) -> tuple[int, bytes]:
    """Send bytes as they are (for what aiohttp's client refuses to send); status and body."""
    url = URL(agent.url)
    assert url.host is not None and url.port is not None
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(request_bytes)
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("header", ID_HEADERS)
@pytest.mark.parametrize("task_id", BAD_IDS)
async def test_bad_task_id_header_is_400_and_changes_nothing(
    agent: AgentUnderTest, endpoint: str, header: str, task_id: str
) -> None:
    untouched = await Untouched.snapshot(agent)
    raw = json.dumps(good_workflow("badid")).encode()
    if "\x00" in task_id:
        # Not sendable with aiohttp; the HTTP parser refuses it before the agent sees it.
        status, _ = await raw_http(
            agent,
            f"POST {endpoint} HTTP/1.1\r\nHost: x\r\n{header}: ".encode()
            + task_id.encode()
            + f"\r\nContent-Length: {len(raw)}\r\nConnection: close\r\n\r\n".encode()
            + raw,
        )
        assert status == 400
    else:
        answer = await request(agent, "POST", endpoint, raw, {header: task_id})
        assert answer.status == 400, answer
        assert answer.body == {"message": "InvalidTaskId", "error": INVALID_TASK_ID}
    await untouched.check()


@pytest.mark.parametrize("task_id", BAD_IDS)
async def test_bad_status_id_is_400(agent: AgentUnderTest, task_id: str) -> None:
    answer = await request(agent, "GET", "/api/status?id=" + quote(task_id, safe=""), encoded=True)
    assert answer.status == 400, answer
    assert answer.body == {"message": "InvalidTaskId", "error": INVALID_TASK_ID}


async def test_status_without_id_is_400(agent: AgentUnderTest) -> None:
    for path in ("/api/status", "/api/status?id=", "/api/status?task_id=abc"):
        answer = await request(agent, "GET", path)
        assert answer.status == 400, answer
        assert answer.body == {
            "message": "RequestParamsError",
            "error": "query parameter id (the task id) is required",
        }


@pytest.mark.parametrize("method", ["GET", "DELETE"])
@pytest.mark.parametrize("task_id", BAD_IDS)
async def test_bad_task_path_id_is_400(agent: AgentUnderTest, method: str, task_id: str) -> None:
    untouched = await Untouched.snapshot(agent)
    path = "/api/tasks/" + quote(task_id, safe="")
    answer = await request(agent, method, path, encoded=True)
    assert answer.status == 400, answer
    assert answer.body == {"message": "InvalidTaskId", "error": INVALID_TASK_ID}
    await untouched.check()


@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_unknown_task_path_id_is_404(agent: AgentUnderTest, method: str) -> None:
    task_id = new_task_id()
    answer = await request(agent, method, f"/api/tasks/{task_id}")
    assert answer.status == 404, answer
    assert answer.body == {"message": "TaskNotFound", "error": f"task {task_id} not found"}


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
@pytest.mark.parametrize(
    "path", ["/api/tasks/abc/extra", "/api/tasks/abc/", "/api/tasks/", "/api/run/extra"]
)
async def test_extra_path_segments_reach_no_agent_route(
    agent: AgentUnderTest, method: str, path: str
) -> None:
    # Not an agent route: passed through to ComfyUI (DESIGN: "anything else"), which has no
    # such path. A workflow sent there must not run anywhere.
    untouched = await Untouched.snapshot(agent)
    data = json.dumps(good_workflow("extra")).encode() if method == "POST" else None
    async with agent.session.request(method, agent.url + path, data=data) as response:
        assert response.status == 404, await response.text()
    await untouched.check()


# --- 2. bad query values and methods -------------------------------------------------------------


@pytest.mark.parametrize("value", ["bogus", "", "BASE64", "none ", "base64,none"])
async def test_unknown_results_mode_is_400_before_anything_runs(
    agent: AgentUnderTest, value: str
) -> None:
    untouched = await Untouched.snapshot(agent)
    task_id = new_task_id()
    answer = await request(
        agent,
        "POST",
        "/api/run?results=" + quote(value, safe=""),
        json.dumps(good_workflow("results")).encode(),
        {"task-id": task_id},
        encoded=True,
    )
    assert answer.status == 400, answer
    assert answer.body == {
        "message": "RequestParamsError",
        "error": f"results must be one of base64, none, not {value!r}",
    }
    assert answer.headers["X-Task-Id"] == task_id
    await untouched.check()


WRONG_METHODS = [
    ("GET", "/api/run"),
    ("PUT", "/api/run"),
    ("PATCH", "/api/run"),
    ("DELETE", "/api/run"),
    ("POST", "/api/status"),
    ("PUT", "/api/status"),
    ("DELETE", "/api/status"),
    ("GET", "/api/tasks"),
    ("PUT", "/api/tasks"),
    ("DELETE", "/api/tasks"),
    ("POST", "/api/tasks/abc"),
    ("PUT", "/api/tasks/abc"),
    ("PATCH", "/api/tasks/abc"),
]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        *WRONG_METHODS,
        ("POST", "/api/run/ws"),
        ("DELETE", "/api/run/ws"),
        ("POST", "/healthz"),
        ("POST", "/readyz"),
        ("DELETE", "/metrics"),
    ],
)
async def test_wrong_method_on_agent_route_is_405_json(
    agent: AgentUnderTest, method: str, path: str
) -> None:
    untouched = await Untouched.snapshot(agent)
    data = json.dumps(good_workflow("method")).encode()
    async with agent.session.request(method, agent.url + path, data=data) as response:
        status, content_type, text = response.status, response.content_type, await response.text()
    assert (status, content_type) == (405, "application/json"), text
    assert json.loads(text) == {
        "message": "MethodNotAllowed",
        "error": f"{method} is not allowed on {path}",
    }
    await untouched.check()


# --- 3. websocket bad input ----------------------------------------------------------------------


@dataclass
class WsExchange:
    messages: list[dict[str, Any]]
    close_code: int | None


async def ws_exchange(
    agent: AgentUnderTest,
    path: str,
    sends: list[str | bytes],
    headers: dict[str, str] | None = None,
) -> WsExchange:
    """Send the frames, then read JSON text messages until the server closes."""
    messages: list[dict[str, Any]] = []
    async with asyncio.timeout(20):
        async with agent.session.ws_connect(agent.ws_url(path), headers=headers) as ws:
            for frame in sends:
                if isinstance(frame, bytes):
                    await ws.send_bytes(frame)
                else:
                    await ws.send_str(frame)
            async for message in ws:
                assert message.type == aiohttp.WSMsgType.TEXT, message
                messages.append(json.loads(message.data))
        return WsExchange(messages, ws.close_code)


def ws_error(message: str, error: str) -> list[dict[str, Any]]:
    return [{"type": "error", "data": {"message": message, "error": error}}]


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        pytest.param("garbage", "body is not valid JSON: Expecting value", id="garbage-text"),
        pytest.param("", "body is not valid JSON: Expecting value", id="empty-text"),
        pytest.param("[1, 2]", NOT_OBJECT + "an array", id="array"),
        pytest.param("null", NOT_OBJECT + "null", id="null"),
        pytest.param(b"\xff\x00\x81junk", "body is not valid JSON", id="binary-junk"),
        pytest.param("{}", "workflow is empty: it has no nodes", id="empty-object"),
        pytest.param('{"1": 5}', "node '1' must be an object, not a number", id="node-number"),
        pytest.param('{"1": {"inputs": {}}}', "node '1' has no class_type", id="no-class-type"),
    ],
)
async def test_ws_bad_first_message_gets_one_error_then_close(
    agent: AgentUnderTest, frame: str | bytes, error: str
) -> None:
    untouched = await Untouched.snapshot(agent)
    exchange = await ws_exchange(agent, "/api/run/ws", [frame])
    [message] = exchange.messages
    assert message["type"] == "error"
    assert message["data"]["message"] == "RequestParamsError"
    assert message["data"]["error"].startswith(error), message
    assert exchange.close_code == aiohttp.WSCloseCode.OK
    await untouched.check()


async def test_ws_message_over_max_body_closes_with_message_too_big(
    agent: AgentUnderTest,
) -> None:
    untouched = await Untouched.snapshot(agent)
    exchange = await ws_exchange(agent, "/api/run/ws", ["x" * (MAX_BODY + 1)])
    assert exchange.messages == []
    assert exchange.close_code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
    await untouched.check()


async def test_ws_garbage_after_the_workflow_does_not_disturb_the_run(
    agent: AgentUnderTest,
) -> None:
    task_id = new_task_id()
    workflow = good_workflow("ws-garbage")
    frames: list[str | bytes] = [json.dumps(workflow), "garbage", b"\xff\x00", "[1]", "{}"]
    exchange = await ws_exchange(agent, f"/api/run/ws?results=none&task_id={task_id}", frames)
    kinds = [m["type"] for m in exchange.messages]
    assert kinds[-1] == "result" and set(kinds[:-1]) <= {"progress"}, exchange.messages
    result = exchange.messages[-1]["data"]
    assert set(result) == set(workflow)
    assert all(node["value"] == node["max"] == 1 for node in result.values())
    assert exchange.close_code == aiohttp.WSCloseCode.OK
    # The result message may overtake the final store write by a moment.
    async with asyncio.timeout(5):
        while (record := await agent.services.store.load(task_id)) is None or (
            not record.status.is_terminal
        ):
            await asyncio.sleep(0.02)
    assert record.status is TaskStatus.SUCCEEDED


async def test_ws_closed_without_a_message_logs_no_error(
    agent: AgentUnderTest, caplog: pytest.LogCaptureFixture
) -> None:
    untouched = await Untouched.snapshot(agent)
    caplog.set_level(logging.WARNING)
    # A clean close frame before any workflow.
    for _ in range(3):
        async with agent.session.ws_connect(agent.ws_url("/api/run/ws")) as ws:
            await ws.close()
    # A client that vanishes: handshake, then the TCP connection just drops.
    url = URL(agent.url)
    assert url.host is not None and url.port is not None
    for _ in range(3):
        reader, writer = await asyncio.open_connection(url.host, url.port)
        key = base64.b64encode(uuid.uuid4().bytes).decode()
        writer.write(
            (
                "GET /api/run/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
        assert head.startswith(b"HTTP/1.1 101"), head
        writer.transport.abort()
    await asyncio.sleep(0.5)  # let the server side notice and finish its handlers
    problems = [
        f"{r.name}: {r.getMessage()}"
        for r in caplog.records
        if r.levelno >= logging.ERROR
        and r.name.split(".")[0] in AgentErrors.PREFIXES
        and not r.name.startswith("comfyui.child")
    ]
    assert problems == []
    assert not any(r.exc_info for r in caplog.records if r.name.startswith("agent"))
    await untouched.check()


async def test_fifty_websockets_opened_and_dropped_at_once(
    agent: AgentUnderTest, agent_errors: AgentErrors
) -> None:
    untouched = await Untouched.snapshot(agent)
    logged = len(agent_errors.records)
    sockets = await asyncio.gather(
        *(agent.session.ws_connect(agent.ws_url("/api/run/ws")) for _ in range(50))
    )
    # Half say something useless first; then every one goes away without reading.
    await asyncio.gather(*(ws.send_str("garbage") for ws in sockets[::2]))
    await asyncio.gather(*(ws.close() for ws in sockets))
    await asyncio.sleep(0.3)
    assert (await request(agent, "GET", "/healthz")).status == 200
    ready = await request(agent, "GET", "/readyz")
    assert ready.status == 200 and ready.body["ready"] is True
    assert agent_errors.since(logged) == []
    await untouched.check()
    status, _ = await run_good(agent, "after-ws")
    assert status == 200


@pytest.mark.parametrize("task_id", BAD_IDS)
async def test_ws_bad_watch_id_is_an_error_message(agent: AgentUnderTest, task_id: str) -> None:
    exchange = await ws_exchange(agent, "/api/run/ws?id=" + quote(task_id, safe=""), [])
    assert exchange.messages == ws_error("InvalidTaskId", INVALID_TASK_ID)
    assert exchange.close_code == aiohttp.WSCloseCode.OK


@pytest.mark.parametrize("where", ["header", "query"])
@pytest.mark.parametrize("task_id", [i for i in BAD_IDS if "\x00" not in str(i.values[0])])
async def test_ws_bad_run_task_id_is_an_error_message(
    agent: AgentUnderTest, where: str, task_id: str
) -> None:
    untouched = await Untouched.snapshot(agent)
    if where == "header":
        exchange = await ws_exchange(agent, "/api/run/ws", [], headers={"task-id": task_id})
    else:
        exchange = await ws_exchange(agent, "/api/run/ws?task_id=" + quote(task_id, safe=""), [])
    assert exchange.messages == ws_error("InvalidTaskId", INVALID_TASK_ID)
    await untouched.check()


async def test_ws_unknown_results_mode_is_an_error_message(agent: AgentUnderTest) -> None:
    for query in ("?results=bogus", "?results=bogus&id=some-task"):
        exchange = await ws_exchange(agent, "/api/run/ws" + query, [])
        assert exchange.messages == ws_error(
            "RequestParamsError", "results must be one of base64, none, not 'bogus'"
        )


# --- 4. watching a task nobody ran ---------------------------------------------------------------


@pytest.mark.parametrize(
    "task_id",
    ["never-ran", "_x", "a.b-c_d", "9" * 128, "A" * 127 + "z"],
    ids=["plain", "underscore", "punctuation", "128-digits", "128-letters"],
)
async def test_ws_watch_of_unknown_task_is_task_not_found_then_close(
    agent: AgentUnderTest, task_id: str
) -> None:
    exchange = await ws_exchange(agent, f"/api/run/ws?id={task_id}", [])
    assert exchange.messages == ws_error("TaskNotFound", f"task {task_id} not found")
    assert exchange.close_code == aiohttp.WSCloseCode.OK
    # Watching creates nothing.
    assert await agent.services.store.load(task_id) is None
    status = await request(agent, "GET", f"/api/status?id={task_id}")
    assert status.status == 404
    assert status.body == {"message": "LoadProgressError", "error": f"task {task_id} not found"}

"""The fake ComfyUI held to recordings of a real, unmodified ComfyUI 0.3.64.

Each recorded scenario is replayed against the fake the way the recording client ran it (a
websocket with a clientId first, then POST /prompt with that client_id, interrupts at the same
progress step, ...). The frames, HTTP answers and /history entries are then normalised (see
trace_tools) and must equal the recording's.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.fake_comfyui.fixtures import FakeComfyUI, start_fake_comfyui
from tests.trace_tools import (
    IdMap,
    Record,
    canon,
    has_trace,
    history_shape,
    load_history,
    load_post_calls,
    load_prompt,
    load_upload,
    load_ws_trace,
    normalise,
    normalise_json,
    record_binary,
    record_text,
    split_status,
    trace_path,
)

FAST = ("--slow-delay", "0.02")  # SlowCounter steps 10x faster than the recorded 0.2 s
WAIT = 15.0  # upper bound for any single awaited frame or answer
QUIET = 0.1  # how long "no further frames" is watched for after a scenario ends

Launcher = Callable[..., Awaitable[FakeComfyUI]]
Predicate = Callable[[Record], bool]


@pytest.fixture
async def launch(tmp_path: Path) -> AsyncIterator[Launcher]:
    """Start fakes (each a subprocess on its own port); all are killed at teardown."""
    started: list[FakeComfyUI] = []

    async def _launch(*args: str) -> FakeComfyUI:
        fake = await start_fake_comfyui(tmp_path, *args)
        started.append(fake)
        return fake

    yield _launch
    for fake in started:
        await fake.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT)) as session:
        yield session


# --- a recording websocket client ----------------------------------------------------------------


class Client:
    """A websocket client that keeps every frame in trace shape."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, client_id: str | None) -> None:
        self.ws = ws
        self.client_id = client_id
        self.records: list[Record] = []

    @classmethod
    async def connect(
        cls, http: aiohttp.ClientSession, fake: FakeComfyUI, client_id: str | None = None
    ) -> Client:
        client = cls(await http.ws_connect(fake.ws_url(client_id)), client_id)
        await client.until(is_type("status"))  # every connection is greeted with a status
        return client

    async def next(self, timeout: float = WAIT) -> Record:
        msg = await self.ws.receive(timeout=timeout)
        if msg.type == aiohttp.WSMsgType.TEXT:
            record = record_text(json.loads(msg.data))
        elif msg.type == aiohttp.WSMsgType.BINARY:
            record = record_binary(msg.data)
        else:
            raise ConnectionError(f"websocket ended: {msg.type}")
        self.records.append(record)
        return record

    async def until(self, predicate: Predicate) -> Record:
        while not predicate(record := await self.next()):
            pass
        return record

    async def assert_quiet(self) -> None:
        """Nothing more arrives (the recorder kept listening 1 s after the end)."""
        try:
            extra = await self.next(timeout=QUIET)
        except TimeoutError:
            return
        pytest.fail(f"unexpected frame after the end: {extra}")

    async def announce_preview_metadata(self) -> None:
        await self.ws.send_json(
            {"type": "feature_flags", "data": {"supports_preview_metadata": True}}
        )
        await self.until(is_type("feature_flags"))


def message(record: Record) -> tuple[str | None, dict[str, Any]]:
    msg = record.get("msg") or {}
    return msg.get("type"), msg.get("data") or {}


def is_type(kind: str) -> Predicate:
    return lambda record: message(record)[0] == kind


def end_of(prompt_id: str) -> Predicate:
    """The last frame of a prompt for its client: executing {node: null, prompt_id}."""

    def check(record: Record) -> bool:
        kind, data = message(record)
        return (
            kind == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id
        )

    return check


def idle_status(record: Record) -> bool:
    """A status broadcast saying the queue is empty (not a connection's greeting)."""
    kind, data = message(record)
    return (
        kind == "status"
        and "sid" not in data
        and data["status"]["exec_info"]["queue_remaining"] == 0
    )


def progress_at(value: int) -> Predicate:
    def check(record: Record) -> bool:
        kind, data = message(record)
        return kind == "progress" and data.get("value") == value

    return check


# --- HTTP helpers --------------------------------------------------------------------------------


async def call(
    http: aiohttp.ClientSession, method: str, url: str, payload: Any = None, data: Any = None
) -> tuple[int, Any]:
    """(status, JSON body or text) of one request."""
    async with http.request(method, url, json=payload, data=data) as response:
        text = await response.text()
        try:
            return response.status, json.loads(text)
        except ValueError:
            return response.status, text


async def post_prompt(
    http: aiohttp.ClientSession, fake: FakeComfyUI, prompt: dict[str, Any], client_id: str | None
) -> dict[str, Any]:
    body: dict[str, Any] = {"prompt": prompt}
    if client_id is not None:
        body["client_id"] = client_id
    status, answer = await call(http, "POST", f"{fake.url}/prompt", body)
    assert status == 200, answer
    return dict(answer)


async def get_history(
    http: aiohttp.ClientSession, fake: FakeComfyUI, prompt_ids: list[str]
) -> dict[str, Any]:
    """GET /history/<id> per prompt, None where the answer is {} (as the recorder stored it)."""
    result = {}
    for prompt_id in prompt_ids:
        status, body = await call(http, "GET", f"{fake.url}/history/{prompt_id}")
        assert status == 200
        result[prompt_id] = body.get(prompt_id)
    return result


def recorded_answer(name: str, label: str) -> dict[str, Any]:
    calls = [c for c in load_post_calls(name) if c["label"] == label]
    assert calls, f"{name}: no recorded call {label!r}"
    return calls[0]


# --- comparing with a recording ------------------------------------------------------------------


@dataclass
class Comparison:
    """Compares one scenario's live data with its recording; prompt ids are mapped to
    placeholders in order of appearance, separately on each side."""

    name: str
    got_ids: IdMap = field(default_factory=IdMap)
    want_ids: IdMap = field(default_factory=IdMap)

    def frames(self, got: list[Record], trace: str, racing_status: bool = False) -> None:
        got_frames = normalise(got, self.got_ids)
        want_frames = normalise(load_ws_trace(trace), self.want_ids)
        if racing_status:
            assert split_status(got_frames) == split_status(want_frames)
        else:
            assert got_frames == want_frames

    def prompt_answers(self, got: list[dict[str, Any]], labels: list[str]) -> None:
        want = [recorded_answer(self.name, label)["body"] for label in labels]
        assert _answer_shapes(got, self.got_ids) == _answer_shapes(want, self.want_ids)

    async def history(
        self, http: aiohttp.ClientSession, fake: FakeComfyUI, prompt_ids: list[str]
    ) -> None:
        got = await get_history(http, fake, prompt_ids)
        assert history_shape(got, self.got_ids) == history_shape(
            load_history(self.name), self.want_ids
        )


def _answer_shapes(answers: list[dict[str, Any]], ids: IdMap) -> list[tuple[Any, ...]]:
    """POST /prompt answers: mapped id, number relative to the first, node_errors."""
    first = answers[0]["number"]
    return [
        (
            sorted(a),
            ids(a["prompt_id"]),
            type(a["number"]).__name__,
            a["number"] - first,
            canon(a["node_errors"]),
        )
        for a in answers
    ]


def _queue_shape(queue: dict[str, Any], ids: IdMap, first_number: int) -> dict[str, Any]:
    return {
        key: [
            (number - first_number, ids(prompt_id), canon(prompt), sorted(extra), outputs)
            for number, prompt_id, prompt, extra, outputs in items
        ]
        for key, items in queue.items()
    }


@dataclass
class Run:
    client: Client
    observer: Client | None
    answer: dict[str, Any]

    @property
    def prompt_id(self) -> str:
        return str(self.answer["prompt_id"])


async def run_recorded(
    http: aiohttp.ClientSession,
    fake: FakeComfyUI,
    name: str,
    *,
    prompt: dict[str, Any] | None = None,
    with_client_id: bool = True,
    preview_metadata: bool = False,
) -> Run:
    """Run one prompt the way the recorder did (its trace's prompt unless given) and wait
    for its end on every socket."""
    client = await Client.connect(http, fake, str(uuid.uuid4()))
    if preview_metadata:
        await client.announce_preview_metadata()
    observer = None
    if has_trace(f"{name}.observer"):
        observer = await Client.connect(http, fake, str(uuid.uuid4()))
    prompt = prompt if prompt is not None else load_prompt(name)
    answer = await post_prompt(http, fake, prompt, client.client_id if with_client_id else None)
    if with_client_id:
        await client.until(end_of(answer["prompt_id"]))
    else:
        await client.until(idle_status)
    if observer is not None:
        await observer.until(idle_status)
    for socket in (client, observer):
        if socket is not None:
            await socket.assert_quiet()
    return Run(client, observer, answer)


async def check_recorded(
    http: aiohttp.ClientSession, fake: FakeComfyUI, name: str, run: Run
) -> None:
    """Frames of both sockets, the POST /prompt answer and /history against the recording."""
    compare = Comparison(name)
    compare.frames(run.client.records, name)
    if run.observer is not None:
        compare.frames(run.observer.records, f"{name}.observer")
    compare.prompt_answers([run.answer], ["POST /prompt"])
    await compare.history(http, fake, [run.prompt_id])
    greeting = message(run.client.records[0])[1]
    assert greeting["sid"] == run.client.client_id


# --- recorded scenarios --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["success", "progress", "runtime_error", "runtime_error_custom", "txt2img"],
)
async def test_single_prompt_scenario(
    launch: Launcher, http: aiohttp.ClientSession, name: str
) -> None:
    fake = await launch(*FAST)
    run = await run_recorded(http, fake, name)
    await check_recorded(http, fake, name, run)


@pytest.mark.parametrize(
    ("name", "first", "args"),
    [
        ("success_cached", "success", FAST),
        ("txt2img_newseed", "txt2img", FAST),
        ("txt2img_full", "txt2img_newseed", FAST),  # only the latent is shared, hence cached
        ("txt2img_preview_meta", "txt2img_preview", ("--preview-method", "latent2rgb")),
    ],
)
async def test_scenario_after_cached_run(
    launch: Launcher, http: aiohttp.ClientSession, name: str, first: str, args: tuple[str, ...]
) -> None:
    """Recorded on a server that had just run `first`: its cache decides what runs."""
    fake = await launch(*args)
    await run_recorded(http, fake, first)
    run = await run_recorded(http, fake, name, preview_metadata=name.endswith("_meta"))
    await check_recorded(http, fake, name, run)


async def test_txt2img_preview(launch: Launcher, http: aiohttp.ClientSession) -> None:
    fake = await launch("--preview-method", "latent2rgb")
    run = await run_recorded(http, fake, "txt2img_preview")
    await check_recorded(http, fake, "txt2img_preview", run)
    previews = [r for r in run.client.records if r.get("binary")]
    assert [r["image_type"] for r in previews] == ["JPEG"] * 4


async def test_load_image(launch: Launcher, http: aiohttp.ClientSession) -> None:
    fake = await launch(*FAST)
    form = aiohttp.FormData()
    png = trace_path("load_image", "upload.png").read_bytes()
    form.add_field("image", png, filename="cref_upload.png", content_type="image/png")
    form.add_field("overwrite", "true")
    status, body = await call(http, "POST", f"{fake.url}/upload/image", data=form)
    recorded = load_upload("load_image")
    assert (status, body) == (recorded["status"], recorded["body"])
    assert (fake.input_dir / "cref_upload.png").read_bytes() == png

    run = await run_recorded(http, fake, "load_image")
    await check_recorded(http, fake, "load_image", run)
    assert len(list(fake.temp_dir.glob("ComfyUI_temp_*_00001_.png"))) == 1


async def test_no_client_id(launch: Launcher, http: aiohttp.ClientSession) -> None:
    """Without client_id only progress/progress_state/status reach (every) socket."""
    fake = await launch(*FAST)
    run = await run_recorded(http, fake, "no_client_id", with_client_id=False)
    compare = Comparison("no_client_id")
    compare.frames(run.client.records, "no_client_id")
    compare.prompt_answers([run.answer], ["POST /prompt"])
    await compare.history(http, fake, [run.prompt_id])


@pytest.mark.parametrize(
    ("name", "at_step", "payload"), [("interrupt", 10, "id"), ("interrupt_global", 5, None)]
)
async def test_interrupt(
    launch: Launcher, http: aiohttp.ClientSession, name: str, at_step: int, payload: str | None
) -> None:
    # SlowCounter keeps its real 0.2 s steps here: POST /interrupt must land within one step
    # to be honoured at the next, as in the recording
    fake = await launch()
    client = await Client.connect(http, fake, str(uuid.uuid4()))
    observer = (
        await Client.connect(http, fake, str(uuid.uuid4()))
        if has_trace(f"{name}.observer")
        else None
    )
    answer = await post_prompt(http, fake, load_prompt(name), client.client_id)
    await client.until(progress_at(at_step))
    body = {"prompt_id": answer["prompt_id"]} if payload else None
    label = "POST /interrupt {prompt_id}" if payload else "POST /interrupt (no body)"
    recorded = recorded_answer(name, label)
    assert await call(http, "POST", f"{fake.url}/interrupt", body) == (
        recorded["status"],
        recorded["body"],
    )
    await client.until(end_of(answer["prompt_id"]))
    await client.assert_quiet()
    run = Run(client, observer, answer)
    if observer is not None:
        await observer.until(idle_status)
        await observer.assert_quiet()
    await check_recorded(http, fake, name, run)


async def test_queue_two(launch: Launcher, http: aiohttp.ClientSession) -> None:
    fake = await launch("--slow-delay", "0.05")
    prompts = load_prompt("queue_two")
    client = await Client.connect(http, fake, str(uuid.uuid4()))
    observer = await Client.connect(http, fake, str(uuid.uuid4()))
    first = await post_prompt(http, fake, prompts["first"], client.client_id)
    second = await post_prompt(http, fake, prompts["second"], client.client_id)
    status, queue = await call(http, "GET", f"{fake.url}/queue")
    await client.until(end_of(second["prompt_id"]))
    await observer.until(idle_status)
    await client.assert_quiet()
    await observer.assert_quiet()

    compare = Comparison("queue_two")
    # the second POST's status lands between the first prompt's frames wherever it happens to
    compare.frames(client.records, "queue_two", racing_status=True)
    compare.frames(observer.records, "queue_two.observer")
    compare.prompt_answers([first, second], ["POST /prompt first", "POST /prompt second"])
    recorded = recorded_answer("queue_two", "GET /queue while both queued")
    assert status == recorded["status"]
    want_first = recorded["body"]["queue_running"][0][0]
    got_queue = _queue_shape(queue, compare.got_ids, first["number"])
    assert got_queue == _queue_shape(recorded["body"], compare.want_ids, want_first)
    await compare.history(http, fake, [first["prompt_id"], second["prompt_id"]])


async def test_queue_delete(launch: Launcher, http: aiohttp.ClientSession) -> None:
    fake = await launch("--slow-delay", "0.05")
    prompts = load_prompt("queue_delete")
    client = await Client.connect(http, fake, str(uuid.uuid4()))
    first = await post_prompt(http, fake, prompts["first"], client.client_id)
    second = await post_prompt(http, fake, prompts["second"], client.client_id)
    await client.until(progress_at(2))
    deleted = await call(http, "POST", f"{fake.url}/queue", {"delete": [second["prompt_id"]]})
    status, queue = await call(http, "GET", f"{fake.url}/queue")
    await client.until(end_of(first["prompt_id"]))
    await client.assert_quiet()

    compare = Comparison("queue_delete")
    compare.frames(client.records, "queue_delete", racing_status=True)
    compare.prompt_answers([first, second], ["POST /prompt first", "POST /prompt second"])
    recorded = recorded_answer("queue_delete", "POST /queue delete second")
    assert deleted == (recorded["status"], recorded["body"])
    recorded = recorded_answer("queue_delete", "GET /queue after delete")
    assert status == recorded["status"]
    want_first = recorded["body"]["queue_running"][0][0]
    got_queue = _queue_shape(queue, compare.got_ids, first["number"])
    assert got_queue == _queue_shape(recorded["body"], compare.want_ids, want_first)
    await compare.history(http, fake, [first["prompt_id"], second["prompt_id"]])


def _steps_from(records: list[Record], first_step: int) -> list[Record]:
    """Drop SlowCounter steps below `first_step` (when a reconnect lands is timing)."""
    kept = []
    for record in records:
        kind, data = message(record)
        if kind == "progress" and data["value"] < first_step:
            continue
        if kind == "progress_state":
            running = [n for n in data["nodes"].values() if n["state"] == "running"]
            if (
                running
                and isinstance(running[0]["value"], int)
                and running[0]["value"] < first_step
            ):
                continue
        kept.append(record)
    return kept


def _first_step(records: list[Record]) -> int:
    return min(int(message(r)[1]["value"]) for r in records if is_type("progress")(r))


async def test_reconnect(launch: Launcher, http: aiohttp.ClientSession) -> None:
    fake = await launch("--slow-delay", "0.05")
    client_id = str(uuid.uuid4())
    first = await Client.connect(http, fake, client_id)
    answer = await post_prompt(http, fake, load_prompt("reconnect"), client_id)
    await first.until(progress_at(3))
    await first.ws.close()
    await asyncio.sleep(0.125)  # the scenario itself: stay away 2.5 steps, as recorded (0.5 s)
    second = await Client.connect(http, fake, client_id)
    await second.until(end_of(answer["prompt_id"]))
    await second.assert_quiet()

    compare = Comparison("reconnect")
    compare.frames(first.records, "reconnect.first")
    got_first_step = _first_step(second.records)
    assert got_first_step > 3, "steps sent while disconnected must not be replayed"
    want = load_ws_trace("reconnect.second")
    common = max(got_first_step, _first_step(want))
    got_frames = normalise(_steps_from(second.records, common), compare.got_ids)
    assert got_frames == normalise(_steps_from(want, common), compare.want_ids)
    assert message(second.records[1]) == ("executing", {"node": "2"})
    compare.prompt_answers([answer], ["POST /prompt"])
    await compare.history(http, fake, [answer["prompt_id"]])


@pytest.mark.parametrize(
    "name",
    [
        "validation_unknown_class",
        "validation_missing_input",
        "validation_bad_value",
        "validation_missing_file",
        "validation_no_outputs",
        "validation_bad_link",
    ],
)
async def test_validation(launch: Launcher, http: aiohttp.ClientSession, name: str) -> None:
    fake = await launch()
    client = await Client.connect(http, fake, str(uuid.uuid4()))
    status, body = await call(
        http,
        "POST",
        f"{fake.url}/prompt",
        {"prompt": load_prompt(name), "client_id": client.client_id},
    )
    recorded = recorded_answer(name, "POST /prompt")
    assert status == recorded["status"]
    assert normalise_json(body, IdMap()) == normalise_json(recorded["body"], IdMap())
    await client.assert_quiet()
    assert normalise(client.records) == normalise(load_ws_trace(name))


async def test_validation_no_prompt(launch: Launcher, http: aiohttp.ClientSession) -> None:
    fake = await launch()
    recorded = recorded_answer("validation_no_prompt", "POST /prompt without prompt key")
    assert await call(http, "POST", f"{fake.url}/prompt", {"client_id": "x"}) == (
        recorded["status"],
        recorded["body"],
    )
    recorded = recorded_answer("validation_no_prompt", "POST /prompt with invalid JSON body")
    async with http.post(f"{fake.url}/prompt", data=b"{not json") as response:
        assert response.status == recorded["status"]
        assert response.headers["Content-Type"] == recorded["content_type"]
        assert await response.text() == recorded["body_text"]


# --- behaviour outside the recordings ------------------------------------------------------------


async def test_upload_names_like_comfyui(launch: Launcher, http: aiohttp.ClientSession) -> None:
    fake = await launch()

    async def upload(content: bytes, **fields: str) -> Any:
        form = aiohttp.FormData()
        form.add_field("image", content, filename="pic.png", content_type="image/png")
        for key, value in fields.items():
            form.add_field(key, value)
        status, body = await call(http, "POST", f"{fake.url}/upload/image", data=form)
        assert status == 200
        return body

    assert await upload(b"one") == {"name": "pic.png", "subfolder": "", "type": "input"}
    assert (await upload(b"two"))["name"] == "pic (1).png"  # same name, other bytes
    assert (await upload(b"one"))["name"] == "pic.png"  # same bytes: reused, not copied
    assert (await upload(b"three", overwrite="true"))["name"] == "pic.png"
    assert (fake.input_dir / "pic.png").read_bytes() == b"three"
    assert await upload(b"x", subfolder="masks", type="temp") == {
        "name": "pic.png",
        "subfolder": "masks",
        "type": "temp",
    }
    assert (fake.temp_dir / "masks" / "pic.png").read_bytes() == b"x"


async def test_view_serves_files_safely(launch: Launcher, http: aiohttp.ClientSession) -> None:
    fake = await launch(*FAST)
    run = await run_recorded(http, fake, "success")
    executed = [message(r)[1] for r in run.client.records if is_type("executed")(r)]
    image = executed[0]["output"]["images"][0]
    async with http.get(f"{fake.url}/view", params=image) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "image/png"
        data = await response.read()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert int.from_bytes(data[16:20], "big") == 64  # EmptyImage's width survives
    view = f"{fake.url}/view"
    assert (await call(http, "GET", view))[0] == 404  # no filename at all
    assert (await call(http, "GET", f"{view}?filename=../x.png"))[0] == 400
    assert (await call(http, "GET", f"{view}?filename=x.png&subfolder=../.."))[0] == 403
    assert (await call(http, "GET", f"{view}?filename=nope.png"))[0] == 404
    assert (await call(http, "GET", f"{view}?filename={image['filename']}&type=bogus"))[0] == 400


async def test_media_output_nodes(launch: Launcher, http: aiohttp.ClientSession) -> None:
    """Video, animated GIF (VHS-like), audio and text outputs: shapes and real files."""
    fake = await launch()
    prompt = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 32, "height": 24, "batch_size": 3, "color": 255},
        },
        "2": {"class_type": "CreateVideo", "inputs": {"images": ["1", 0], "fps": 8.0}},
        "3": {
            "class_type": "SaveVideo",
            "inputs": {
                "video": ["2", 0],
                "filename_prefix": "video/clip",
                "format": "auto",
                "codec": "auto",
            },
        },
        "4": {
            "class_type": "VHS_VideoCombine",
            "inputs": {
                "images": ["1", 0],
                "frame_rate": 8,
                "loop_count": 0,
                "filename_prefix": "anim",
                "format": "image/gif",
                "pingpong": False,
                "save_output": True,
            },
        },
        "5": {
            "class_type": "EmptyAudio",
            "inputs": {"duration": 0.5, "sample_rate": 22050, "channels": 1},
        },
        "6": {
            "class_type": "SaveAudio",
            "inputs": {"audio": ["5", 0], "filename_prefix": "audio/tone"},
        },
        "7": {"class_type": "PreviewAny", "inputs": {"source": "hello"}},
    }
    run = await run_recorded(http, fake, "media", prompt=prompt)
    outputs = {
        d["node"]: d["output"]
        for d in (message(r)[1] for r in run.client.records if is_type("executed")(r))
    }
    assert outputs["3"] == {
        "images": [{"filename": "clip_00001_.mp4", "subfolder": "video", "type": "output"}],
        "animated": [True],
    }
    gif = outputs["4"]["gifs"][0]
    assert {k: gif[k] for k in ("filename", "subfolder", "type", "format")} == {
        "filename": "anim_00001.gif",
        "subfolder": "",
        "type": "output",
        "format": "image/gif",
    }
    assert outputs["6"] == {
        "audio": [{"filename": "tone_00001_.flac", "subfolder": "audio", "type": "output"}]
    }
    assert outputs["7"] == {"text": ["hello"]}
    magic = {
        "3": (4, b"ftyp", "video/mp4"),
        "4": (0, b"GIF89a", "image/gif"),
        "6": (0, b"fLaC", "audio/flac"),
    }
    for node, (offset, signature, content_type) in magic.items():
        entry = next(iter(outputs[node].values()))[0]
        params = {k: entry[k] for k in ("filename", "subfolder", "type")}
        async with http.get(f"{fake.url}/view", params=params) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == content_type
            assert (await response.read())[offset : offset + len(signature)] == signature


async def test_cache_is_keyed_by_inputs_not_node_ids(
    launch: Launcher, http: aiohttp.ClientSession
) -> None:
    fake = await launch()
    prompt = load_prompt("success")
    await run_recorded(http, fake, "success")
    renumbered = json.loads(
        json.dumps(prompt).replace('"1"', '"10"').replace('"2"', '"20"').replace('"3"', '"30"')
    )
    run = await run_recorded(http, fake, "renumbered", prompt=renumbered)
    cached = [message(r)[1]["nodes"] for r in run.client.records if is_type("execution_cached")(r)]
    assert cached == [["10", "20", "30"]]
    prompt["1"]["inputs"]["color"] = 123  # a changed input invalidates it and everything after
    run = await run_recorded(http, fake, "changed", prompt=prompt)
    cached = [message(r)[1]["nodes"] for r in run.client.records if is_type("execution_cached")(r)]
    executing = [message(r)[1]["node"] for r in run.client.records if is_type("executing")(r)]
    assert cached == [[]]
    assert executing == ["1", "2", "3", None]


async def test_queue_controls(launch: Launcher, http: aiohttp.ClientSession) -> None:
    """Interrupting a pending prompt does nothing; clearing the queue drops it; a
    client-chosen prompt_id is kept; /history lists, limits and deletes."""
    fake = await launch("--slow-delay", "0.05")
    prompts = load_prompt("queue_two")
    client = await Client.connect(http, fake, str(uuid.uuid4()))
    first = await post_prompt(http, fake, prompts["first"], client.client_id)
    body = {"prompt": prompts["second"], "client_id": client.client_id, "prompt_id": "my-own-id"}
    status, second = await call(http, "POST", f"{fake.url}/prompt", body)
    assert (status, second["prompt_id"], second["number"]) == (
        200,
        "my-own-id",
        first["number"] + 1,
    )
    assert await call(http, "POST", f"{fake.url}/interrupt", {"prompt_id": "my-own-id"}) == (
        200,
        "",
    )
    assert await call(http, "POST", f"{fake.url}/queue", {"clear": True}) == (200, "")
    status, queue = await call(http, "GET", f"{fake.url}/queue")
    assert [item[1] for item in queue["queue_running"]] == [first["prompt_id"]]
    assert queue["queue_pending"] == []
    await client.until(end_of(first["prompt_id"]))
    assert is_type("execution_success")(client.records[-3])

    third = await post_prompt(http, fake, load_prompt("success"), client.client_id)
    await client.until(end_of(third["prompt_id"]))
    assert list((await call(http, "GET", f"{fake.url}/history"))[1]) == [
        first["prompt_id"],
        third["prompt_id"],
    ]
    assert list((await call(http, "GET", f"{fake.url}/history?max_items=1"))[1]) == [
        third["prompt_id"]
    ]
    assert (await call(http, "GET", f"{fake.url}/history/my-own-id"))[1] == {}
    await call(http, "POST", f"{fake.url}/history", {"delete": [first["prompt_id"]]})
    assert list((await call(http, "GET", f"{fake.url}/history"))[1]) == [third["prompt_id"]]
    await call(http, "POST", f"{fake.url}/history", {"clear": True})
    assert (await call(http, "GET", f"{fake.url}/history"))[1] == {}


async def test_websocket_handshakes(launch: Launcher, http: aiohttp.ClientSession) -> None:
    fake = await launch()
    anonymous = await Client.connect(http, fake)
    sid = message(anonymous.records[0])[1]["sid"]
    assert len(sid) == 32 and int(sid, 16) >= 0  # ComfyUI uses uuid4().hex here
    await anonymous.announce_preview_metadata()
    assert message(anonymous.records[-1]) == (
        "feature_flags",
        {"supports_preview_metadata": True, "max_upload_size": 104857600},
    )
    late = await Client.connect(http, fake, "late")
    await late.ws.send_json({"type": "hello"})  # not feature_flags: ignored, and no longer first
    await late.ws.send_json({"type": "feature_flags", "data": {}})
    await late.assert_quiet()


async def test_routes_and_api_prefix(launch: Launcher, http: aiohttp.ClientSession) -> None:
    fake = await launch()
    status, stats = await call(http, "GET", f"{fake.url}/api/system_stats")
    assert status == 200
    assert stats["system"]["comfyui_version"] == "0.3.64"
    assert {"os", "python_version", "ram_total", "ram_free"} <= set(stats["system"])
    assert stats["devices"][0]["type"] == "cpu"
    status, info = await call(http, "GET", f"{fake.url}/object_info")
    assert status == 200
    assert {"EmptyImage", "SaveImage", "KSampler", "SlowCounter", "SaveVideo", "PreviewAny"} <= set(
        info
    )
    assert info["EmptyImage"]["input"]["required"]["width"] == [
        "INT",
        {"default": 512, "min": 1, "max": 16384, "step": 1},
    ]
    assert info["SaveImage"]["output_node"] is True
    assert (await call(http, "GET", f"{fake.url}/api/object_info/KSampler"))[1]["KSampler"][
        "output"
    ] == ["LATENT"]
    assert await call(http, "GET", f"{fake.url}/object_info/Nope") == (200, {})
    assert await call(http, "GET", f"{fake.url}/embeddings") == (200, [])
    assert await call(http, "GET", f"{fake.url}/api/prompt") == (
        200,
        {"exec_info": {"queue_remaining": 0}},
    )
    status, page = await call(http, "GET", f"{fake.url}/")
    assert status == 200
    assert "<html" in page
    status, answer = await call(http, "POST", f"{fake.url}/api/prompt", {"prompt": {}})
    assert (status, answer["error"]["type"]) == (400, "prompt_no_outputs")


async def test_fault_injection(launch: Launcher, http: aiohttp.ClientSession) -> None:
    fake = await launch()
    client = await Client.connect(http, fake, "victim")
    assert await call(http, "GET", f"{fake.url}/fake/clients") == (200, {"clients": ["victim"]})

    assert (await call(http, "POST", f"{fake.url}/fake/drop-websockets"))[0] == 200
    with pytest.raises(ConnectionError):
        await client.next()  # the socket ends without further frames
    assert await call(http, "GET", f"{fake.url}/fake/clients") == (200, {"clients": []})

    assert (await call(http, "POST", f"{fake.url}/fake/stall?seconds=0.3"))[0] == 200
    started = time.monotonic()
    assert (await call(http, "GET", f"{fake.url}/system_stats"))[0] == 200
    assert time.monotonic() - started >= 0.25

    with pytest.raises(aiohttp.ClientError):
        await call(http, "POST", f"{fake.url}/fake/crash")
    assert await asyncio.wait_for(fake.process.wait(), WAIT) == 137


async def test_startup_delay_and_foreign_flags(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    flags = ("--startup-delay", "0.4", "--cpu", "--disable-auto-launch", "--disable-api-nodes")
    started = time.monotonic()
    fake = await start_fake_comfyui(tmp_path, *flags, wait_ready=False)
    try:
        with pytest.raises(aiohttp.ClientConnectionError):
            await call(http, "GET", f"{fake.url}/system_stats")
        await fake.wait_ready()
        assert time.monotonic() - started >= 0.4
        log = fake.read_log()
        assert "Starting server" in log
        assert f"To see the GUI go to: http://127.0.0.1:{fake.port}" in log
    finally:
        await fake.stop()

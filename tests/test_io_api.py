"""Inputs and outputs through the API: inline and URL images, seeds, media outputs, previews."""

from __future__ import annotations

import base64
import json
import struct
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from agent.inputs import content_name
from tests.agent_harness import AgentUnderTest, running_agent, trace_prompt
from tests.test_inputs import png

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def image_server() -> AsyncIterator[str]:
    """A loopback HTTP server: /cat.png (an image), /text (not one), /away (redirect)."""
    app = web.Application()
    image = png(6, 4)

    async def cat(request: web.Request) -> web.Response:
        return web.Response(body=image, content_type="image/png")

    async def text(request: web.Request) -> web.Response:
        return web.Response(text="definitely not an image")

    app.router.add_get("/cat.png", cat)
    app.router.add_get("/text", text)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def agent(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AgentUnderTest]:
    flags = ["--url-fetch-allow", "127.0.0.1/32"]
    async with running_agent(
        tmp_path_factory.mktemp("io"), flags=flags, fake_args=["--preview-method", "latent2rgb"]
    ) as running:
        yield running


def load_image_prompt(value: Any) -> dict[str, Any]:
    prompt = trace_prompt("load_image")
    prompt["1"]["inputs"]["image"] = value
    prompt["2"]["inputs"]["filename_prefix"] = f"io_{uuid.uuid4().hex[:8]}"
    return prompt


async def run(
    agent: AgentUnderTest, prompt: Any, query: str = "", **headers: str
) -> tuple[int, dict[str, str], Any]:
    async with agent.session.post(
        f"{agent.url}/api/run{query}", json=prompt, headers=headers
    ) as response:
        return response.status, dict(response.headers), await response.json()


def png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.mark.parametrize(
    "encode",
    [
        lambda b: base64.b64encode(b).decode(),
        lambda b: "data:image/png;base64," + base64.b64encode(b).decode(),
        lambda b: base64.b64encode(b).decode().rstrip("="),
    ],
    ids=["base64", "data-uri", "unpadded"],
)
async def test_inline_image_is_uploaded_under_its_content_name(
    agent: AgentUnderTest, encode: Any
) -> None:
    image = png(9, 7)
    status, _, body = await run(agent, load_image_prompt(encode(image)))
    assert status == 200, body
    name = content_name(image, "png")
    assert (agent.fake_dir / "input" / name).read_bytes() == image
    # The image went through ComfyUI: SaveImage wrote one of the same size.
    assert png_size(base64.b64decode(body["2"]["results"][0])) == (9, 7)


async def test_the_same_bytes_are_uploaded_once(agent: AgentUnderTest) -> None:
    image = png(11, 3)
    encoded = base64.b64encode(image).decode()
    for _ in range(3):
        status, _, _ = await run(agent, load_image_prompt(encoded))
        assert status == 200
    stored = [p for p in (agent.fake_dir / "input").iterdir() if p.read_bytes() == image]
    assert [p.name for p in stored] == [content_name(image, "png")]


async def test_a_file_name_passes_through(agent: AgentUnderTest) -> None:
    image = png(5, 5)
    form = aiohttp.FormData()
    form.add_field("image", image, filename="mine.png", content_type="image/png")
    async with agent.session.post(f"{agent.comfyui_url}/upload/image", data=form) as response:
        assert response.status == 200
    status, _, body = await run(agent, load_image_prompt("mine.png"))
    assert status == 200, body
    assert png_size(base64.b64decode(body["2"]["results"][0])) == (5, 5)
    status, _, body = await run(agent, load_image_prompt("missing.png"))
    assert status == 400
    assert body["error"]["node_errors"]["1"]["errors"][0]["type"] == "custom_validation_failed"


async def test_url_image_is_fetched_and_uploaded(agent: AgentUnderTest, image_server: str) -> None:
    status, _, body = await run(agent, load_image_prompt(f"{image_server}/cat.png"))
    assert status == 200, body
    assert png_size(base64.b64decode(body["2"]["results"][0])) == (6, 4)
    assert (agent.fake_dir / "input" / content_name(png(6, 4), "png")).exists()


async def test_url_that_is_not_an_image_is_422(agent: AgentUnderTest, image_server: str) -> None:
    status, headers, body = await run(
        agent, load_image_prompt(f"{image_server}/text"), **{"task-id": "url-not-image"}
    )
    assert status == 422
    assert headers["X-Task-Status"] == "failed"
    assert body["message"] == "InputError"
    assert body["error"]["node_id"] == "1"
    assert "did not return an image" in body["error"]["message"]


async def test_blocked_url_is_422_naming_node_and_input(tmp_path: Path) -> None:
    # No --url-fetch-allow: loopback is refused, so nothing is fetched at all.
    async with running_agent(tmp_path) as agent:
        status, _, body = await run(agent, load_image_prompt("http://127.0.0.1:9/cat.png"))
    assert status == 422
    assert body["error"]["type"] == "input_error"
    assert body["error"]["details"]["input"] == "image"
    assert "loopback" in body["error"]["message"]


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("!!! this is neither a file name nor base64 !!! " * 8, "neither a file name"),
        (base64.b64encode(b"%PDF-1.7" + b"0" * 400).decode(), "not an image"),
        ("data:image/png;base64,***", "not valid base64"),
    ],
)
async def test_unusable_inline_image_is_422_and_stores_nothing(
    agent: AgentUnderTest, value: str, fragment: str
) -> None:
    task_id = f"bad-input-{uuid.uuid4().hex[:6]}"
    status, headers, body = await run(agent, load_image_prompt(value), **{"task-id": task_id})
    assert status == 422
    assert headers["X-Task-Id"] == task_id
    assert body["message"] == "InputError"
    assert fragment in body["error"]["message"]
    assert "node 1 (LoadImage) input 'image'" in body["error"]["message"]
    assert await agent.services.store.load(task_id) is None


async def test_seed_minus_one_is_replaced_and_recorded(agent: AgentUnderTest) -> None:
    prompt = trace_prompt("txt2img")
    prompt["3"]["inputs"]["seed"] = -1
    seeds = []
    for i in range(2):
        status, _, _ = await run(agent, prompt, "?results=none", **{"task-id": f"seed-{i}"})
        assert status == 200
        record = await agent.services.store.load(f"seed-{i}")
        assert record is not None
        seed = record.seeds["3"]["seed"]
        assert 0 <= seed < 2**53
        seeds.append(seed)
    assert seeds[0] != seeds[1]
    # ComfyUI got the chosen seed, not -1.
    async with agent.session.get(f"{agent.comfyui_url}/history") as response:
        history = await response.json()
    posted = [
        entry["prompt"][2]["3"]["inputs"]["seed"]
        for entry in history.values()
        if entry["prompt"][2].get("3", {}).get("class_type") == "KSampler"
    ]
    assert set(seeds) <= set(posted) and -1 not in posted


def node(class_type: str, **inputs: Any) -> dict[str, Any]:
    return {"class_type": class_type, "inputs": inputs}


def media_prompt() -> dict[str, Any]:
    """Video (SaveVideo), animated GIF (VHS_VideoCombine: `gifs`), audio and text outputs."""
    marker = uuid.uuid4().hex[:8]
    frames = ["1", 0]
    return {
        "1": node("EmptyImage", width=16, height=16, batch_size=2, color=255),
        "2": node("CreateVideo", images=frames, fps=8.0),
        "3": node(
            "SaveVideo",
            video=["2", 0],
            filename_prefix=f"video/{marker}",
            format="auto",
            codec="auto",
        ),
        "4": node(
            "VHS_VideoCombine",
            images=frames,
            frame_rate=8.0,
            loop_count=0,
            filename_prefix=f"gif_{marker}",
            format="image/gif",
            pingpong=False,
            save_output=True,
        ),
        "5": node("EmptyAudio", duration=0.1, sample_rate=8000, channels=1),
        "6": node("SaveAudio", audio=["5", 0], filename_prefix=f"audio/{marker}"),
        "7": node("PreviewAny", source=f"hello {marker}"),
    }


async def test_every_output_kind_is_recorded_and_inlined(agent: AgentUnderTest) -> None:
    prompt = media_prompt()
    status, _, body = await run(agent, prompt, **{"task-id": "media-1"})
    assert status == 200, body
    [video] = body["3"]["images"]
    assert video["subfolder"] == "video" and video["filename"].endswith(".mp4")
    assert base64.b64decode(body["3"]["results"][0])[4:8] == b"ftyp"
    [gif] = body["4"]["images"]
    assert base64.b64decode(body["4"]["results"][0]).startswith(b"GIF8")
    assert gif["filename"].endswith(".gif")
    [audio] = body["6"]["images"]
    assert base64.b64decode(body["6"]["results"][0]).startswith(b"fLaC")
    assert audio["subfolder"] == "audio"
    assert body["7"]["images"] is None and "results" not in body["7"]
    # Non-file outputs travel in the sync answer too: a text node's text.
    assert body["7"]["outputs"] == {"text": [prompt["7"]["inputs"]["source"]]}
    assert body["3"]["outputs"] == {"animated": [True]}
    assert "outputs" not in body["6"] and "outputs" not in body["1"]
    record = await agent.services.store.load("media-1")
    assert record is not None
    assert record.outputs["7"] == {"text": [prompt["7"]["inputs"]["source"]]}
    assert record.outputs["3"]["animated"] == [True]
    assert record.outputs["4"]["gifs"][0]["format"] == "image/gif"
    # results=none: the same map without the (possibly huge) files.
    status, _, lean = await run(agent, prompt, "?results=none")
    assert status == 200
    assert all("results" not in node for node in lean.values())


async def test_unknown_results_value_is_400(agent: AgentUnderTest) -> None:
    status, _, body = await run(agent, media_prompt(), "?results=zip")
    assert status == 400 and "results must be one of" in body["error"]


async def receive_all(
    ws: aiohttp.ClientWebSocketResponse,
) -> tuple[list[dict[str, Any]], list[bytes]]:
    texts, frames = [], []
    async for message in ws:
        if message.type == aiohttp.WSMsgType.TEXT:
            texts.append(json.loads(message.data))
        elif message.type == aiohttp.WSMsgType.BINARY:
            frames.append(message.data)
    return texts, frames


async def test_previews_are_forwarded_only_when_asked(agent: AgentUnderTest) -> None:
    prompt = trace_prompt("txt2img")
    prompt["3"]["inputs"]["steps"] = 4
    prompt["3"]["inputs"]["seed"] = -1
    async with agent.session.ws_connect(agent.ws_url("/api/run/ws?previews=1&results=none")) as ws:
        await ws.send_json(prompt)
        texts, frames = await receive_all(ws)
    assert texts[-1]["type"] == "result"
    assert len(frames) == 4
    for frame in frames:
        event_type, image_type = struct.unpack(">II", frame[:8])
        assert (event_type, image_type) == (1, 1)  # PREVIEW_IMAGE, JPEG: ComfyUI's own format
        assert frame[8:11] == b"\xff\xd8\xff"
    async with agent.session.ws_connect(agent.ws_url("/api/run/ws?results=none")) as ws:
        await ws.send_json(prompt)
        texts, frames = await receive_all(ws)
    assert texts[-1]["type"] == "result" and frames == []

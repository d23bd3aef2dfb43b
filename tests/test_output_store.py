"""The S3 output store against a real S3-compatible server (moto) on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import aiohttp
import pytest

from agent.delivery.image_format import ImageFormat
from agent.delivery.metrics import DeliveryMetrics
from agent.delivery.output_files import OutputFiles, output_dir_from_command
from agent.delivery.output_store import OutputStore, OutputStoreConfigError, OutputStoreError
from agent.delivery.s3 import S3Location, S3OutputStore, credentials_from
from agent.delivery.stores import open_output_store
from agent.delivery.uploads import Uploader, UploadFailed
from comfyui.client import ComfyUIClient
from store.records import NodeProgress, OutputFile, TaskRecord
from tests.delivery_fixtures import S3_ENV, FlakyProxy, S3Server, s3_server

__all__ = ["s3_server"]


def store_for(server: S3Server, bucket: str, prefix: str = "out") -> S3OutputStore:
    return S3OutputStore(S3Location.parse(server.url(bucket, prefix)), env=S3_ENV)


async def no_sleep(_: float) -> None:
    return None


# --- URL parsing (no I/O) -----------------------------------------------------------------


def test_s3_url_parsing() -> None:
    where = S3Location.parse(
        "s3://my-bucket/a/b/?endpoint=https://oss-cn-hangzhou.aliyuncs.com/&region=cn-hangzhou"
    )
    assert where.bucket == "my-bucket"
    assert where.prefix == "a/b"
    assert where.endpoint == "https://oss-cn-hangzhou.aliyuncs.com"
    assert where.region == "cn-hangzhou"
    assert not where.path_style  # OSS wants virtual-hosted requests
    assert S3Location.parse("s3://bkt?endpoint=http://127.0.0.1:9000").path_style
    assert S3Location.parse("s3://bkt?endpoint=http://localhost:9000").path_style
    assert S3Location.parse("s3://bkt?endpoint=http://minio:9000&path_style=true").path_style
    assert S3Location.parse("s3://bkt").endpoint is None


@pytest.mark.parametrize(
    "url",
    [
        "http://bucket/prefix",
        "s3:///prefix",
        "s3://key:secret@bucket/prefix",
        "s3://bucket?endpoint=ftp://x",
        "s3://bucket?color=blue",
        "s3://bucket?path_style=maybe",
        "s3://b/x",  # bucket names have at least 3 characters
        "gs://bucket/x",
    ],
)
def test_bad_store_urls_are_refused(url: str) -> None:
    with pytest.raises(OutputStoreConfigError):
        open_output_store(url, env={})


def test_credentials_prefer_agent_variables() -> None:
    env = {
        "AWS_ACCESS_KEY_ID": "aws",
        "AWS_SECRET_ACCESS_KEY": "aws-secret",
        "AGENT_OUTPUT_STORE_ACCESS_KEY_ID": "own",
        "AGENT_OUTPUT_STORE_SECRET_ACCESS_KEY": "own-secret",
    }
    assert credentials_from(env) == {"access_key_id": "own", "secret_access_key": "own-secret"}
    del env["AGENT_OUTPUT_STORE_ACCESS_KEY_ID"]
    assert credentials_from(env)["access_key_id"] == "aws"
    assert credentials_from({}) == {}


def test_keys_and_uris() -> None:
    store = open_output_store("s3://bucket/pre/fix?endpoint=http://127.0.0.1:1", env=S3_ENV)
    assert isinstance(store, OutputStore)
    assert store.key_for("task-1", "img_00001_.png") == "pre/fix/task-1/img_00001_.png"
    assert store.uri("pre/fix/task-1/a.png") == "s3://bucket/pre/fix/task-1/a.png"
    assert store.location == "s3://bucket/pre/fix"
    bare = open_output_store("s3://bucket?endpoint=http://127.0.0.1:1", env=S3_ENV)
    assert bare.key_for("t", "a.png") == "t/a.png"


def test_output_dir_from_command() -> None:
    assert output_dir_from_command(["main.py", "--output-directory", "/o"]) == Path("/o")
    assert output_dir_from_command(["main.py", "--output-directory=/p"]) == Path("/p")
    assert output_dir_from_command(["main.py", "--port", "1"]) is None


# --- against moto ---------------------------------------------------------------------------


async def test_upload_sets_content_type_and_presigned_url_downloads(
    s3_server: S3Server, tmp_path: Path
) -> None:
    bucket = s3_server.make_bucket()
    store = store_for(s3_server, bucket)
    data = os.urandom(300_000)
    path = tmp_path / "a.png"
    path.write_bytes(data)
    key = store.key_for("task-1", "a.png")
    await store.upload(key, path, "image/png")
    assert s3_server.get(bucket, key) == (data, "image/png")
    url = await store.presign(key, 600)
    assert url.startswith(f"{s3_server.endpoint}/{bucket}/out/task-1/a.png?")
    assert "X-Amz-Expires=600" in url
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        assert await response.read() == data


async def test_large_upload_is_multipart_and_overwrites(
    s3_server: S3Server, tmp_path: Path
) -> None:
    bucket = s3_server.make_bucket()
    store = store_for(s3_server, bucket)
    path = tmp_path / "v.mp4"
    data = os.urandom(20 * 1024 * 1024)  # > PART_SIZE: several parts
    path.write_bytes(data)
    key = store.key_for("t", "v.mp4")
    await store.upload(key, path, "video/mp4")
    await store.upload(key, path, "video/mp4")  # re-runs write the same keys
    body, content_type = s3_server.get(bucket, key)
    assert body == data
    assert content_type == "video/mp4"


async def test_missing_bucket_fails_without_retry(s3_server: S3Server, tmp_path: Path) -> None:
    store = store_for(s3_server, "no-such-bucket-here")
    path = tmp_path / "a.png"
    path.write_bytes(b"x")
    with pytest.raises(OutputStoreError) as caught:
        await store.upload("k/a.png", path, "image/png")
    assert not caught.value.retryable


def record_with(files: dict[str, list[str]], task_id: str = "task-1") -> TaskRecord:
    record = TaskRecord(task_id=task_id)
    for node_id, names in files.items():
        images = [OutputFile(filename=name) for name in names] or None
        record.progress[node_id] = NodeProgress(max=1, value=1, images=images)
    return record


def uploader(output_dir: Path | None, **kwargs: object) -> tuple[Uploader, DeliveryMetrics]:
    metrics = DeliveryMetrics()
    # The client is never called when every file is in the output directory.
    client = ComfyUIClient("http://127.0.0.1:9", session=None)  # type: ignore[arg-type]
    files = OutputFiles(client, output_dir)
    return Uploader(files, metrics, sleep=no_sleep, **kwargs), metrics  # type: ignore[arg-type]


async def test_uploader_keeps_node_and_file_order(s3_server: S3Server, tmp_path: Path) -> None:
    bucket = s3_server.make_bucket()
    out = tmp_path / "output"
    out.mkdir()
    names = {"9": [f"img_{i:05d}_.png" for i in range(6)], "3": ["other.txt"], "4": []}
    for node_names in names.values():
        for name in node_names:
            (out / name).write_bytes(name.encode())
    up, metrics = uploader(out, concurrency=2)
    urls = await up.upload_task(store_for(s3_server, bucket), record_with(names))
    assert urls == {
        "9": [f"s3://{bucket}/out/task-1/img_{i:05d}_.png" for i in range(6)],
        "3": [f"s3://{bucket}/out/task-1/other.txt"],
    }
    assert s3_server.get(bucket, "out/task-1/other.txt") == (b"other.txt", "text/plain")
    assert metrics.uploads["uploaded"] == 7


async def test_uploader_retries_through_server_errors(s3_server: S3Server, tmp_path: Path) -> None:
    bucket = s3_server.make_bucket()
    proxy = FlakyProxy(s3_server.endpoint, fail=4)
    await proxy.start()
    try:
        out = tmp_path / "output"
        out.mkdir()
        (out / "a.png").write_bytes(b"png")
        url = f"s3://{bucket}/out?endpoint={proxy.url}&region=us-east-1"
        store = S3OutputStore(S3Location.parse(url), env=S3_ENV, max_retries=1)
        up, metrics = uploader(out, attempts=4)
        urls = await up.upload_task(store, record_with({"9": ["a.png"]}))
    finally:
        await proxy.stop()
    assert urls == {"9": [f"s3://{bucket}/out/task-1/a.png"]}
    assert proxy.failed == 4
    assert metrics.uploads["retried"] == 2  # each attempt: one request + one client retry
    assert s3_server.get(bucket, "out/task-1/a.png")[0] == b"png"


async def test_uploader_names_the_file_that_failed(tmp_path: Path) -> None:
    out = tmp_path / "output"
    out.mkdir()
    (out / "a.png").write_bytes(b"png")
    dead = f"s3://bucket-x/out?endpoint=http://127.0.0.1:{_closed_port()}"
    store = S3OutputStore(S3Location.parse(dead), env=S3_ENV, max_retries=0)
    up, metrics = uploader(out, attempts=3)
    with pytest.raises(UploadFailed) as caught:
        await up.upload_task(store, record_with({"9": ["a.png"]}))
    assert caught.value.file_name == "a.png"
    assert metrics.uploads == {"retried": 2, "failed": 1}


async def test_uploader_converts_images_and_leaves_originals(
    s3_server: S3Server, tmp_path: Path
) -> None:
    from PIL import Image

    bucket = s3_server.make_bucket()
    out = tmp_path / "output"
    out.mkdir()
    Image.new("RGBA", (32, 32), (255, 0, 0, 128)).save(out / "a.png")
    original = (out / "a.png").read_bytes()
    (out / "clip.mp4").write_bytes(b"not an image")
    up, _ = uploader(out)
    urls = await up.upload_task(
        store_for(s3_server, bucket),
        record_with({"9": ["a.png", "clip.mp4"]}),
        image_format=ImageFormat("webp", 70),
    )
    assert urls["9"] == [
        f"s3://{bucket}/out/task-1/a.webp",
        f"s3://{bucket}/out/task-1/clip.mp4",
    ]
    body, content_type = s3_server.get(bucket, "out/task-1/a.webp")
    assert content_type == "image/webp"
    assert body[:4] == b"RIFF" and body[8:12] == b"WEBP"
    assert (out / "a.png").read_bytes() == original


def _closed_port() -> int:
    from tests.fake_comfyui.fixtures import free_port

    return free_port()


# --- memory: a large file goes /view -> disk -> S3 without being held ----------------------

_MEMORY_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, os, resource, sys
    from pathlib import Path
    import aiohttp
    from aiohttp import web
    from agent.delivery.metrics import DeliveryMetrics
    from agent.delivery.output_files import OutputFiles
    from agent.delivery.s3 import S3Location, S3OutputStore
    from agent.delivery.uploads import Uploader
    from comfyui.client import ComfyUIClient
    from store.records import NodeProgress, OutputFile, TaskRecord

    store_url, port, size_mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    CHUNK = os.urandom(1024 * 1024)

    async def view(request):
        response = web.StreamResponse(headers={"Content-Type": "video/mp4"})
        response.content_length = size_mib * len(CHUNK)
        await response.prepare(request)
        for _ in range(size_mib):
            await response.write(CHUNK)
        return response

    def peak():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    async def main():
        app = web.Application()
        app.router.add_get("/view", view)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        async with aiohttp.ClientSession() as session:
            client = ComfyUIClient(f"http://127.0.0.1:{port}", session)
            store = S3OutputStore(S3Location.parse(store_url))
            uploader = Uploader(OutputFiles(client, None), DeliveryMetrics())
            record = TaskRecord(task_id="big")
            record.progress["9"] = NodeProgress(images=[OutputFile(filename="big.mp4")])
            before = peak()
            urls = await uploader.upload_task(store, record)
            print(json.dumps({"before": before, "after": peak(), "urls": urls}))
        await runner.cleanup()

    asyncio.run(main())
    """
)


def test_large_file_streams_with_bounded_memory(s3_server: S3Server) -> None:
    from tests.fake_comfyui.fixtures import free_port

    bucket = s3_server.make_bucket()
    size_mib = 256
    result = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT, s3_server.url(bucket), str(free_port()),
         str(size_mib)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **S3_ENV},
        cwd=Path(__file__).resolve().parents[1],
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    numbers = json.loads(result.stdout.strip().splitlines()[-1])
    assert numbers["urls"] == {"9": [f"s3://{bucket}/out/big/big.mp4"]}
    grown = numbers["after"] - numbers["before"]
    # Held whole, the file alone would add 256 MiB; parts in flight take ~2 x 8 MiB.
    assert grown < 96, f"peak RSS grew by {grown:.0f} MiB uploading {size_mib} MiB"
    keys = s3_server.keys(bucket)
    assert keys == ["out/big/big.mp4"]

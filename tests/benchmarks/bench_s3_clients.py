"""Benchmark: async S3 clients (obstore, aiobotocore, opendal) uploading output files.

    .venv/bin/python -m tests.benchmarks.bench_s3_clients [--big-mib 256] [--small 64]

Starts moto's S3 server on loopback, then, for each client installed, in a fresh process
(so peak memory is that client's alone): one large file streamed from disk, then `--small`
1 MiB files 8 at a time, then 100 presigned GET URLs. Prints wall time and the process's
peak RSS above its baseline. moto keeps objects in memory and is itself the slow side, so
compare the clients' ratios, not the absolute numbers. Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from tests.fake_comfyui.fixtures import free_port

BUCKET = "bench"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}


def peak_rss_mib() -> float:
    """This process's peak RSS so far, MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def run_obstore(endpoint: str, big: Path, small: list[Path]) -> dict[str, float]:
    import obstore
    from obstore.store import S3Store

    store = S3Store(
        BUCKET,
        endpoint=endpoint,
        region="us-east-1",
        access_key_id="bench",
        secret_access_key="bench",
        client_options={"allow_http": True},
        virtual_hosted_style_request=False,
    )
    times: dict[str, float] = {}
    start = time.perf_counter()
    await obstore.put_async(
        store, "obstore/big.bin", big, chunk_size=8 * 1024 * 1024, max_concurrency=4
    )
    times["big"] = time.perf_counter() - start
    limit = asyncio.Semaphore(8)

    async def one(path: Path) -> None:
        async with limit:
            await obstore.put_async(store, f"obstore/{path.name}", path)

    start = time.perf_counter()
    await asyncio.gather(*(one(p) for p in small))
    times["small"] = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(100):
        await obstore.sign_async(store, "GET", f"obstore/{i}", timedelta(hours=1))
    times["sign100"] = time.perf_counter() - start
    return times


async def run_aiobotocore(endpoint: str, big: Path, small: list[Path]) -> dict[str, float]:
    from aiobotocore.session import get_session
    from botocore.config import Config

    session = get_session()
    config = Config(s3={"addressing_style": "path"}, max_pool_connections=16)
    times: dict[str, float] = {}
    async with session.create_client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
        config=config,
    ) as client:
        start = time.perf_counter()
        # Multipart with 8 MiB parts read one at a time: the bounded-memory way.
        part_size = 8 * 1024 * 1024
        upload = await client.create_multipart_upload(Bucket=BUCKET, Key="aiobotocore/big.bin")
        parts = []
        with big.open("rb") as handle:
            number = 1
            while chunk := handle.read(part_size):
                answer = await client.upload_part(
                    Bucket=BUCKET,
                    Key="aiobotocore/big.bin",
                    UploadId=upload["UploadId"],
                    PartNumber=number,
                    Body=chunk,
                )
                parts.append({"ETag": answer["ETag"], "PartNumber": number})
                number += 1
        await client.complete_multipart_upload(
            Bucket=BUCKET,
            Key="aiobotocore/big.bin",
            UploadId=upload["UploadId"],
            MultipartUpload={"Parts": parts},
        )
        times["big"] = time.perf_counter() - start
        limit = asyncio.Semaphore(8)

        async def one(path: Path) -> None:
            async with limit:
                with path.open("rb") as handle:
                    await client.put_object(
                        Bucket=BUCKET, Key=f"aiobotocore/{path.name}", Body=handle
                    )

        start = time.perf_counter()
        await asyncio.gather(*(one(p) for p in small))
        times["small"] = time.perf_counter() - start
        start = time.perf_counter()
        for i in range(100):
            await client.generate_presigned_url(
                "get_object", Params={"Bucket": BUCKET, "Key": f"x/{i}"}, ExpiresIn=3600
            )
        times["sign100"] = time.perf_counter() - start
    return times


async def run_opendal(endpoint: str, big: Path, small: list[Path]) -> dict[str, float]:
    import opendal

    op = opendal.AsyncOperator(
        "s3",
        bucket=BUCKET,
        endpoint=endpoint,
        region="us-east-1",
        access_key_id="bench",
        secret_access_key="bench",
    )
    times: dict[str, float] = {}
    start = time.perf_counter()
    writer = await op.open("opendal/big.bin", "wb", chunk=8 * 1024 * 1024)
    with big.open("rb") as handle:
        while chunk := handle.read(8 * 1024 * 1024):
            await writer.write(chunk)
    await writer.close()
    times["big"] = time.perf_counter() - start
    limit = asyncio.Semaphore(8)

    async def one(path: Path) -> None:
        async with limit:
            data = await asyncio.to_thread(path.read_bytes)
            await op.write(f"opendal/{path.name}", data)

    start = time.perf_counter()
    await asyncio.gather(*(one(p) for p in small))
    times["small"] = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(100):
        await op.presign_read(f"x/{i}", 3600)
    times["sign100"] = time.perf_counter() - start
    return times


RUNNERS = {"obstore": run_obstore, "aiobotocore": run_aiobotocore, "opendal": run_opendal}


def child(name: str, endpoint: str, workdir: str) -> None:
    """Run one client in this (fresh) process and print its numbers as JSON."""
    os.environ.update(CREDENTIALS)
    root = Path(workdir)
    small = sorted(root.glob("small-*.bin"))
    baseline = peak_rss_mib()
    try:
        times = asyncio.run(RUNNERS[name](endpoint, root / "big.bin", small))
    except ImportError as exc:
        print(json.dumps({"skipped": str(exc)}))
        return
    print(json.dumps({**times, "peak_rss_over_baseline_mib": peak_rss_mib() - baseline}))


def main() -> None:
    """Start moto, make the files, run every client in its own process, print a table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--big-mib", type=int, default=256)
    parser.add_argument("--small", type=int, default=64)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    port = free_port()
    moto = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        _wait_and_make_bucket(endpoint)
        with tempfile.TemporaryDirectory() as workdir:
            root = Path(workdir)
            with (root / "big.bin").open("wb") as handle:
                for _ in range(args.big_mib):
                    handle.write(os.urandom(1024 * 1024))
            for i in range(args.small):
                (root / f"small-{i:03d}.bin").write_bytes(os.urandom(1024 * 1024))
            print(f"big file {args.big_mib} MiB, {args.small} x 1 MiB files, moto on loopback")
            print(
                f"{'client':12} {'big s':>7} {'MiB/s':>7} {'small s':>8} {'sign100 s':>9} "
                f"{'peak RSS +MiB':>13}"
            )
            for name in RUNNERS:
                out = subprocess.run(
                    [sys.executable, "-m", __spec__.name, "--child", name, endpoint, workdir],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                line = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else "{}"
                result: dict[str, Any] = json.loads(line)
                if "big" not in result:
                    print(f"{name:12} failed: {result or out.stderr[-500:]}")
                    continue
                print(
                    f"{name:12} {result['big']:7.2f} {args.big_mib / result['big']:7.1f} "
                    f"{result['small']:8.2f} {result['sign100']:9.3f} "
                    f"{result['peak_rss_over_baseline_mib']:13.1f}"
                )
    finally:
        moto.terminate()
        moto.wait(10)


def _wait_and_make_bucket(endpoint: str) -> None:
    import urllib.request

    deadline = time.monotonic() + 30
    while True:
        try:
            request = urllib.request.Request(f"{endpoint}/{BUCKET}", method="PUT")
            urllib.request.urlopen(request, timeout=2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


if __name__ == "__main__":
    main()

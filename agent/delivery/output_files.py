"""A local path for each output file: ComfyUI's output directory when the agent can read
it, else the file streamed from ComfyUI's `/view` into a temporary file (never whole in
memory); converted to `?format=` when asked, as a new file next to the temporary ones."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mimetypes
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.delivery.cached_read import CachedReader
from agent.delivery.image_format import ImageFormat
from comfyui.client import ComfyUIClient
from store.records import OutputFile

log = logging.getLogger("agent.outputs")


@dataclass(frozen=True)
class LocalFile:
    """An output file ready to upload: where it is, the name and type to upload it with."""

    path: Path
    name: str
    content_type: str


def content_type_of(name: str) -> str:
    """The MIME type a file name suggests (application/octet-stream when unknown)."""
    guessed, _ = mimetypes.guess_type(name)
    return guessed or "application/octet-stream"


def output_dir_from_command(command: Sequence[str]) -> Path | None:
    """ComfyUI's `--output-directory` in a child command line, if given."""
    for index, arg in enumerate(command):
        if arg == "--output-directory" and index + 1 < len(command):
            return Path(command[index + 1])
        if arg.startswith("--output-directory="):
            return Path(arg.split("=", 1)[1])
    return None


class OutputFiles:
    """Gives a readable local path for output files of ComfyUI (see the module docstring)."""

    def __init__(
        self,
        client: ComfyUIClient,
        output_dir: Path | None,
        *,
        on_read: Callable[[str], None] | None = None,
    ) -> None:
        self._client = client
        # Told "cache" or "thread": how each file was read from the output directory.
        self._on_read = on_read
        self._output_dir = output_dir.resolve() if output_dir is not None else None
        # A file ComfyUI has just written is read on the loop when the kernel can hand it
        # over without blocking; a thread otherwise (agent.delivery.cached_read).
        self.cached = CachedReader(str(self._output_dir)) if self._output_dir else None

    async def start(self) -> None:
        """Get the cached reads ready, if the output directory is there already."""
        if self.cached is not None:
            await asyncio.to_thread(self.cached.prepare)

    def close(self) -> None:
        """Let go of the output directory."""
        if self.cached is not None:
            self.cached.close()

    def in_output_dir(self, file: OutputFile) -> Path | None:
        """The file's path in the output directory, if known, inside it and present."""
        if self._output_dir is None or file.type != "output":
            return None
        candidate = (self._output_dir / file.subfolder / file.filename).resolve()
        # Names come from ComfyUI's events: never follow one out of the directory.
        if not candidate.is_relative_to(self._output_dir) or not candidate.is_file():
            return None
        return candidate

    async def view(
        self, filename: str, subfolder: str = "", file_type: str = "output"
    ) -> bytes | bytearray:
        """The file's bytes (ComfyUI's /view contract): from the output directory if there."""
        file = OutputFile(filename=filename, subfolder=subfolder, type=file_type)
        reading = self.read_soon(file)
        data = await reading if reading is not None else None
        if data is not None:
            return data
        return await self._client.view(filename, subfolder, file_type)

    def read_soon(self, file: OutputFile) -> asyncio.Future[bytes | bytearray | None] | None:
        """Start reading the file from the output directory now: on the loop when cached,
        else on a thread (None: it is not there to read, view() asks ComfyUI); the future's
        None: not found after all."""
        if self._output_dir is None or file.type != "output":
            return None
        loop = asyncio.get_running_loop()
        data = self._read_cached(file)
        if data is None:
            self._count("thread")
            return loop.run_in_executor(None, self._read_local, file)
        done: asyncio.Future[bytes | bytearray | None] = loop.create_future()
        done.set_result(data)
        return done

    def _read_cached(self, file: OutputFile) -> bytearray | None:
        if self.cached is None:
            return None
        data = self.cached.read(os.path.join(file.subfolder, file.filename))
        if data is not None:
            self._count("cache")
        return data

    def _count(self, way: str) -> None:
        if self._on_read is not None:
            self._on_read(way)

    def _read_local(self, file: OutputFile) -> bytes | None:
        if self.cached is not None:
            self.cached.prepare()  # once: a thread is where it may block
        path = self.in_output_dir(file)
        if path is None:
            return None
        try:
            return path.read_bytes()
        except OSError:  # gone since, or unreadable: ComfyUI's /view decides
            return None

    @contextlib.asynccontextmanager
    async def staged(
        self, file: OutputFile, image_format: ImageFormat | None
    ) -> AsyncIterator[LocalFile]:
        """The file on local disk (converted when asked), for the duration of the block."""
        workdir = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="comfyui-agent-out-"))
        try:
            path = await asyncio.to_thread(self.in_output_dir, file)
            if path is None:
                log.debug("%s/%s not in the output directory: /view", file.type, file.filename)
                path = workdir / "original"
                await self._client.download(file.filename, file.subfolder, file.type, path)
            name = file.filename
            if image_format is not None and image_format.applies_to(name):
                converted = workdir / "converted"
                if await asyncio.to_thread(image_format.convert_file, path, converted):
                    path, name = converted, image_format.renamed(name)
                    yield LocalFile(path, name, image_format.content_type)
                    return
            yield LocalFile(path, name, content_type_of(name))
        finally:
            await asyncio.to_thread(shutil.rmtree, workdir, True)

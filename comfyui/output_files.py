"""Output files read straight from ComfyUI's output directory when this machine sees it.

ComfyUI writes an output file completely before it reports the node `executed`, so once a
run has ended its files can be read from disk, which saves a `GET /view` round trip through
ComfyUI's event loop per file. Anything that is not a plain output file under the directory
(temp/input files, names that would leave it, a file not there) goes through `/view` as
before, so answers never change, only how fast they come.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from comfyui.supervisor import ComfyUIProcess

# How ComfyUI's main.py is told where to write outputs (and where its default lives).
_OUTPUT_FLAG = "--output-directory"
_BASE_FLAG = "--base-directory"


class FileSource(Protocol):
    """Anything that hands out output files by ComfyUI's (filename, subfolder, type)."""

    async def view(self, filename: str, subfolder: str = "", file_type: str = "output") -> bytes:
        """The file's bytes."""
        ...


def output_directory(command: Sequence[str], cwd: str | os.PathLike[str] | None) -> Path | None:
    """Where a ComfyUI started with `command` in `cwd` writes outputs, or None if unknown.

    `--output-directory D` wins, then `--base-directory B` (B/output), then the folder of
    the `main.py` the command runs (ComfyUI's default: output/ beside main.py).
    """
    base = Path(cwd) if cwd is not None else Path.cwd()
    explicit = _flag_value(command, _OUTPUT_FLAG)
    if explicit is not None:
        return (base / explicit).absolute()
    base_dir = _flag_value(command, _BASE_FLAG)
    if base_dir is not None:
        return (base / base_dir / "output").absolute()
    for arg in command:
        if Path(arg).name == "main.py":
            return ((base / arg).parent / "output").absolute()
    return None


def child_output_directory(backend: object) -> Path | None:
    """The output directory of a ComfyUI child the agent starts itself, if it can tell."""
    if isinstance(backend, ComfyUIProcess):
        return output_directory(backend.command, backend.cwd)
    return None


def _flag_value(command: Sequence[str], flag: str) -> str | None:
    value = None
    for index, arg in enumerate(command):
        if arg == flag and index + 1 < len(command):
            value = command[index + 1]
        elif arg.startswith(flag + "="):
            value = arg[len(flag) + 1 :]
    return value


def local_path(directory: Path, filename: str, subfolder: str, file_type: str) -> Path | None:
    """The path of an output file under directory, or None when it must not be read here.

    The same checks ComfyUI's /view makes: output files only, no absolute names or `..`,
    the subfolder must stay inside the directory.
    """
    if file_type != "output" or not filename or filename.startswith("/") or ".." in filename:
        return None
    root = os.path.abspath(directory)
    folder = os.path.abspath(os.path.join(root, subfolder)) if subfolder else root
    if os.path.commonpath((folder, root)) != root:
        return None
    return Path(folder, os.path.basename(filename))


class LocalOutputs:
    """Reads output files from disk when it can, from `fallback` (GET /view) otherwise."""

    def __init__(self, directory: Path, fallback: FileSource) -> None:
        self.directory = directory
        self._fallback = fallback

    async def view(self, filename: str, subfolder: str = "", file_type: str = "output") -> bytes:
        """The bytes of an output file (ComfyUI's /view contract)."""
        path = local_path(self.directory, filename, subfolder, file_type)
        if path is not None:
            try:
                return await asyncio.to_thread(path.read_bytes)
            except OSError:
                pass  # not here after all (another machine's ComfyUI, deleted): ask ComfyUI
        return await self._fallback.view(filename, subfolder, file_type)

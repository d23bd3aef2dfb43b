"""Output files: which a finished run made, the local names they get, and saving them
without ever overwriting a file."""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.client.assignments import node_order


@dataclass(frozen=True)
class OutputFile:
    """One file a node wrote, as ComfyUI names it, with its bytes when the agent sent them."""

    node: str
    filename: str
    subfolder: str
    type: str
    data: bytes | None


def output_files(progress: dict[str, Any]) -> list[OutputFile]:
    """The files of a final progress map in node order; `results` (base64) when present."""
    files: list[OutputFile] = []
    for node_id in sorted(progress, key=node_order):
        node = progress[node_id]
        images = node.get("images") if isinstance(node, dict) else None
        if not isinstance(images, list):
            continue
        results = node.get("results")
        encoded = results if isinstance(results, list) else []
        for index, image in enumerate(images):
            if not isinstance(image, dict) or not image.get("filename"):
                continue
            data = None
            if index < len(encoded) and isinstance(encoded[index], str):
                try:
                    data = base64.b64decode(encoded[index], validate=True)
                except (binascii.Error, ValueError):
                    data = None  # fetched instead
            files.append(
                OutputFile(
                    node=node_id,
                    filename=str(image["filename"]),
                    subfolder=str(image.get("subfolder") or ""),
                    type=str(image.get("type") or "output"),
                    data=data,
                )
            )
    return files


def local_name(filename: str) -> str:
    """ComfyUI's file name reduced to a plain name in the output folder (never a path)."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1].strip()
    name = name.replace("\x00", "")
    return "output" if name in ("", ".", "..") else name


def candidate_names(filename: str) -> Iterator[str]:
    """`name.png`, then `name-1.png`, `name-2.png`, ...: the names tried in turn."""
    name = local_name(filename)
    yield name
    dot = name.rfind(".")
    stem, suffix = (name[:dot], name[dot:]) if dot > 0 else (name, "")
    counter = 1
    while True:
        yield f"{stem}-{counter}{suffix}"
        counter += 1


def save_new_file(directory: Path, filename: str, data: bytes) -> Path:
    """Write data under the first free candidate name; an existing file is never replaced
    (exclusive create, so two runs saving at once cannot overwrite each other). Blocking."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in candidate_names(filename):
        path = directory / name
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        return path
    raise AssertionError("unreachable: candidate names never run out")

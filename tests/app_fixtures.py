"""App files for tests that run against the fake ComfyUI (its nodes, its speed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.agent_harness import TRACES_DIR

# A real PNG recorded with the traces: LoadImage accepts it, fake and real.
PNG = (TRACES_DIR / "load_image.upload.png").read_bytes()


def invert_app() -> dict[str, Any]:
    """EmptyImage -> ImageInvert -> SaveImage with a size, a colour and a file prefix."""
    return {
        "title": "Inverted colour",
        "description": "Makes a plain picture and inverts it.",
        "prompt": {
            "1": {
                "class_type": "EmptyImage",
                "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 3158064},
                "_meta": {"title": "Empty Image"},
            },
            "2": {
                "class_type": "ImageInvert",
                "inputs": {"image": ["1", 0]},
                "_meta": {"title": "Invert"},
            },
            "3": {
                "class_type": "SaveImage",
                "inputs": {"images": ["2", 0], "filename_prefix": "app_invert"},
                "_meta": {"title": "Save Image"},
            },
        },
        "params": [
            {"type": "number", "id": "1", "key": "width", "title": "Width", "min": 8,
             "max": 256, "step": 8},
            {"type": "select", "id": "1", "key": "height", "title": "Height",
             "options": "32,64,128"},
            {"type": "group", "title": "Output", "children": [
                {"type": "string", "id": "3", "key": "filename_prefix", "title": "File name"},
                {"type": "number", "id": "1", "key": "batch_size", "hidden": True},
            ]},
        ],
    }  # fmt: skip


def photo_app(delay: float = 0.1) -> dict[str, Any]:
    """LoadImage -> SlowCounter -> SaveImage: an image and a step count, visible progress."""
    return {
        "title": "Slow photo copy",
        "prompt": {
            "1": {
                "class_type": "LoadImage",
                "inputs": {"image": "missing.png"},
                "_meta": {
                    "title": "Load Image",
                    "edit": [{"type": "image", "key": "image", "title": "Photo",
                              "description": "Any PNG or JPEG."}],
                },
            },
            "2": {
                "class_type": "SlowCounter",
                "inputs": {"image": ["1", 0], "steps": 5, "delay": delay},
                "_meta": {"title": "Slow Counter"},
            },
            "3": {
                "class_type": "SaveImage",
                "inputs": {"images": ["2", 0], "filename_prefix": "app_photo"},
                "_meta": {"title": "Save Image"},
            },
        },
        "params": [
            {"type": "number", "id": "2", "key": "steps", "title": "Steps", "min": 1,
             "max": 40, "step": 1, "description": "How long it counts."},
        ],
    }  # fmt: skip


def write_apps(directory: Path) -> Path:
    """The test apps as files: invert.json (one app), photo.json; returns directory."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "invert.json").write_text(json.dumps(invert_app()))
    (directory / "photo.json").write_text(json.dumps(photo_app()))
    return directory

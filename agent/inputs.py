"""Pure handling of image inputs: which inputs take images, what form a value has, decoding.

A value of an image input (LoadImage.image by default) may be a file name already in
ComfyUI's input folder (passed through), an http(s) URL, a `data:` URI or plain base64.
Inline forms are decoded and checked here, before any task exists, so a bad one is a 422
that changes nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import pybase64

DEFAULT_IMAGE_INPUTS = ("LoadImage.image", "LoadImageMask.image")

# A ComfyUI file name: has an extension, optionally an annotation like " [output]".
_FILE_NAME = re.compile(r"[^\x00-\x1f]{1,255}\.[A-Za-z0-9]{1,8}( \[(input|output|temp)\])?")
_MAX_PLAIN_NAME = 255


class InputKind(StrEnum):
    """The form of an image input's value."""

    FILE_NAME = "file_name"
    URL = "url"
    DATA_URI = "data_uri"
    BASE64 = "base64"


class InputValueError(ValueError):
    """An image input value that cannot be used; the message names node and input."""

    def __init__(self, node_id: str, class_type: str, input_name: str, reason: str) -> None:
        super().__init__(f"node {node_id} ({class_type}) input {input_name!r}: {reason}")
        self.node_id = node_id
        self.class_type = class_type
        self.input_name = input_name
        self.reason = reason

    def details(self) -> dict[str, str]:
        """Machine-readable detail for the API error."""
        return {"node_id": self.node_id, "input": self.input_name, "reason": self.reason}


Fail = Callable[[str], InputValueError]


@dataclass(frozen=True)
class ImageInput:
    """One image input of a workflow that the agent must supply to ComfyUI."""

    node_id: str
    class_type: str
    input_name: str
    kind: InputKind
    value: str
    # Decoded bytes of inline images (data URI, base64); None for URLs.
    data: bytes | None = None
    extension: str | None = None

    def error(self, reason: str) -> InputValueError:
        """An InputValueError for this input."""
        return InputValueError(self.node_id, self.class_type, self.input_name, reason)


def parse_input_specs(entries: Iterable[str]) -> frozenset[tuple[str, str]]:
    """`ClassType.input` entries (the --image-inputs setting) as (class_type, input) pairs."""
    specs = set()
    for entry in entries:
        class_type, dot, input_name = entry.strip().rpartition(".")
        if not dot or not class_type or not input_name:
            raise ValueError(f"image input {entry!r} must look like ClassType.input_name")
        specs.add((class_type, input_name))
    return frozenset(specs)


def plan_image_inputs(
    workflow: Mapping[str, Mapping[str, Any]],
    specs: frozenset[tuple[str, str]],
    max_bytes: int,
) -> list[ImageInput]:
    """The image inputs the agent must upload (file names excluded); raises InputValueError."""
    planned = []
    for node_id, node in workflow.items():
        class_type = node.get("class_type")
        inputs = node.get("inputs")
        if not isinstance(class_type, str) or not isinstance(inputs, Mapping):
            continue
        for spec_class, input_name in specs:
            if spec_class != class_type or input_name not in inputs:
                continue
            value = inputs[input_name]
            if not isinstance(value, str):
                continue  # a link to another node's output, or something ComfyUI validates
            item = _plan_one(node_id, class_type, input_name, value, max_bytes)
            if item is not None:
                planned.append(item)
    return planned


def plan_image_value(value: str, max_bytes: int) -> ImageInput | None:
    """How one image input value is supplied (None: a file name, passed on as it is).

    Raises InputValueError (its `reason` says why) for a value LoadImage cannot take.
    """
    return _plan_one("", "", "", value, max_bytes)


def _plan_one(
    node_id: str, class_type: str, input_name: str, value: str, max_bytes: int
) -> ImageInput | None:
    def fail(reason: str) -> InputValueError:
        return InputValueError(node_id, class_type, input_name, reason)

    text = value.strip()
    lowered = text[:16].lower()
    if lowered.startswith("data:"):
        data = decode_data_uri(text, max_bytes, fail)
        kind = InputKind.DATA_URI
    elif lowered.startswith(("http://", "https://")):
        return ImageInput(node_id, class_type, input_name, InputKind.URL, text)
    elif _FILE_NAME.fullmatch(text) and "\n" not in text:
        return None  # already in ComfyUI's input folder: ComfyUI checks it exists
    else:
        decoded = _decode_base64(text, max_bytes, fail)
        if decoded is None or sniff_image(decoded) is None:
            if len(text) <= _MAX_PLAIN_NAME and text and not any(c.isspace() for c in text):
                return None  # a file name without extension ("cat" is valid base64 too)
            if decoded is None:
                raise fail(
                    "neither a file name, an http(s) URL, a data: URI nor base64 of an image"
                )
        data, kind = decoded, InputKind.BASE64
    sniffed = sniff_image(data)
    if sniffed is None:
        raise fail(
            f"{'data: URI' if kind is InputKind.DATA_URI else 'base64'} content is not an image"
            " (PNG, JPEG, GIF, WEBP, BMP or TIFF)"
        )
    return ImageInput(node_id, class_type, input_name, kind, "", data, sniffed[1])


def decode_data_uri(text: str, max_bytes: int, fail: Fail) -> bytes:
    """The bytes of a base64 `data:` URI."""
    header, comma, payload = text.partition(",")
    if not comma:
        raise fail("data: URI without a comma")
    if not header.lower().endswith(";base64"):
        raise fail("data: URI must be base64-encoded (data:image/png;base64,...)")
    data = _decode_base64(payload, max_bytes, fail)
    if data is None:
        raise fail("data: URI payload is not valid base64")
    return data


def _decode_base64(payload: str, max_bytes: int, fail: Fail) -> bytes | None:
    # Line breaks (MIME-style wrapping) are fine; spaces are not part of any base64 form.
    compact = payload.replace("\r", "").replace("\n", "").replace("\t", "")
    if not compact:
        return None
    if len(compact) // 4 * 3 > max_bytes + 3:
        raise fail(f"image is larger than {max_bytes} bytes")
    # Standard or URL-safe alphabet, padding optional (the Go agent sent none).
    compact = compact.replace("-", "+").replace("_", "/")
    compact += "=" * (-len(compact) % 4)
    try:
        data = b64decode_strict(compact)
    except (binascii.Error, ValueError):
        return None
    if len(data) > max_bytes:
        raise fail(f"image is larger than {max_bytes} bytes")
    return data


def b64decode_strict(compact: str) -> bytes:
    """Strict base64, as base64.b64decode(validate=True) judges it, at SIMD speed."""
    try:
        return pybase64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        # pybase64 also refuses padding past a whole quantum ("QUJD="), which the
        # standard library lets pass: it has the last word, so no input changes meaning.
        return base64.b64decode(compact, validate=True)


def content_name(data: bytes, extension: str) -> str:
    """A content-addressed file name: the same bytes always get the same name."""
    return f"{hashlib.sha256(data).hexdigest()[:32]}.{extension}"


def sniff_image(data: bytes) -> tuple[str, str] | None:
    """(MIME type, extension) when data starts like a well-formed image, else None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        # The first chunk must be IHDR with a non-zero size.
        if len(data) >= 24 and data[12:16] == b"IHDR":
            width, height = struct.unpack(">II", data[16:24])
            if width and height:
                return "image/png", "png"
        return None
    if data.startswith(b"\xff\xd8\xff"):
        return ("image/jpeg", "jpg") if _jpeg_has_frame(data) else None
    if data[:6] in (b"GIF87a", b"GIF89a"):
        if len(data) >= 10 and all(struct.unpack("<HH", data[6:10])):
            return "image/gif", "gif"
        return None
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp", "webp"
    if data[:2] == b"BM" and len(data) >= 26:
        return "image/bmp", "bmp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff", "tiff"
    return None


def _jpeg_has_frame(data: bytes) -> bool:
    """Walk JPEG markers up to a start-of-frame with a non-zero size."""
    index = 2
    while index + 4 <= len(data):
        if data[index] != 0xFF:
            return False
        marker = data[index + 1]
        if marker == 0xFF:  # fill byte
            index += 1
            continue
        (length,) = struct.unpack(">H", data[index + 2 : index + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if index + 9 > len(data):
                return False
            height, width = struct.unpack(">HH", data[index + 5 : index + 9])
            return bool(height and width)
        if length < 2:
            return False
        index += 2 + length
    return False

"""Pure image-input handling and seed filling: forms, decoding, refusals, naming."""

from __future__ import annotations

import base64
import binascii
import random
import struct
import zlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.inputs import (
    DEFAULT_IMAGE_INPUTS,
    InputKind,
    InputValueError,
    _decode_base64,
    content_name,
    parse_input_specs,
    plan_image_inputs,
    sniff_image,
)
from agent.workflow import MAX_RANDOM_SEED, randomize_seeds

SPECS = parse_input_specs(DEFAULT_IMAGE_INPUTS)
MAX = 1024 * 1024


def png(width: int = 4, height: int = 3) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(b"\x00" + b"\x7f" * (width * 3) for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


JPEG = bytes.fromhex("ffd8ffe000104a46494600010100000100010000ffc0000b080010002001011100ffd9")
GIF = b"GIF89a" + struct.pack("<HH", 2, 2) + b"\x00\x00\x00;"
WEBP = b"RIFF" + struct.pack("<I", 30) + b"WEBPVP8 " + b"\x00" * 18
BMP = b"BM" + b"\x00" * 30
TIFF = b"II*\x00" + b"\x08\x00\x00\x00" + b"\x00" * 8


def workflow(value: Any, class_type: str = "LoadImage", name: str = "image") -> dict[str, Any]:
    return {
        "1": {"class_type": class_type, "inputs": {name: value}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}},
    }


def plan(value: Any, class_type: str = "LoadImage") -> list[Any]:
    return plan_image_inputs(workflow(value, class_type), SPECS, MAX)


@pytest.mark.parametrize(
    ("data", "mime", "extension"),
    [
        (png(), "image/png", "png"),
        (JPEG, "image/jpeg", "jpg"),
        (GIF, "image/gif", "gif"),
        (WEBP, "image/webp", "webp"),
        (BMP, "image/bmp", "bmp"),
        (TIFF, "image/tiff", "tiff"),
    ],
)
def test_sniff_recognises_image_formats(data: bytes, mime: str, extension: str) -> None:
    assert sniff_image(data) == (mime, extension)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello world",
        png()[:20],  # truncated before the size
        png(0, 5),  # zero width
        b"\xff\xd8\xff\xe0\x00\x10JFIF",  # JPEG without a frame
        b"GIF89a\x00\x00\x00\x00",  # zero-size GIF
        b"%PDF-1.4 not an image",
    ],
)
def test_sniff_refuses_what_is_not_an_image(data: bytes) -> None:
    assert sniff_image(data) is None


@pytest.mark.parametrize(
    "encode",
    [
        lambda b: base64.b64encode(b).decode(),
        lambda b: base64.b64encode(b).decode().rstrip("="),  # the Go agent's unpadded form
        lambda b: base64.urlsafe_b64encode(b).decode(),
        lambda b: "\n".join(base64.encodebytes(b).decode().split("\n")),  # MIME line breaks
        lambda b: "data:image/png;base64," + base64.b64encode(b).decode(),
        lambda b: "DATA:image/png;BASE64," + base64.b64encode(b).decode(),
    ],
)
def test_inline_images_are_decoded(encode: Any) -> None:
    data = png(7, 5)
    [item] = plan(encode(data))
    assert item.data == data
    assert item.extension == "png"
    assert item.kind in (InputKind.BASE64, InputKind.DATA_URI)
    assert (item.node_id, item.input_name) == ("1", "image")


@pytest.mark.parametrize(
    "value",
    ["example.png", "sub/dir/cat.jpg", "photo.webp [input]", "out.png [output]", "x.JPEG", "cat"],
)
def test_file_names_pass_through(value: str) -> None:
    assert plan(value) == []


@pytest.mark.parametrize("value", ["https://example.com/a.png", "HTTP://example.com/x"])
def test_urls_are_planned_for_fetching(value: str) -> None:
    [item] = plan(value)
    assert item.kind is InputKind.URL and item.value == value and item.data is None


def test_links_and_non_strings_are_left_to_comfyui() -> None:
    assert plan(["5", 0]) == []
    assert plan(12) == []


def test_other_node_types_are_not_touched() -> None:
    assert plan_image_inputs(workflow("!!not base64!!" * 30, "ImageInvert"), SPECS, MAX) == []


def test_load_image_mask_is_an_image_input_by_default() -> None:
    data = png()
    [item] = plan(base64.b64encode(data).decode(), class_type="LoadImageMask")
    assert item.class_type == "LoadImageMask" and item.data == data


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("this is neither a name nor base64 " * 10, "neither a file name"),
        (base64.b64encode(b"%PDF-1.4" + b"x" * 300).decode(), "not an image"),
        ("data:image/png;base64,@@@@", "not valid base64"),
        ("data:image/png,rawbytes", "must be base64"),
        ("data:image/png;base64", "without a comma"),
        ("data:text/plain;base64," + base64.b64encode(b"hello there").decode(), "not an image"),
    ],
)
def test_unusable_values_name_node_and_input(value: str, reason: str) -> None:
    with pytest.raises(InputValueError) as caught:
        plan(value)
    error = caught.value
    assert reason in str(error)
    assert "node 1 (LoadImage) input 'image'" in str(error)
    assert error.details() == {"node_id": "1", "input": "image", "reason": error.reason}


def stdlib_decode(payload: str) -> bytes | None:
    """What agent.inputs decoded inline base64 to before it used pybase64."""
    compact = payload.replace("\r", "").replace("\n", "").replace("\t", "")
    compact = compact.replace("-", "+").replace("_", "/")
    compact += "=" * (-len(compact) % 4)
    try:
        return base64.b64decode(compact, validate=True) if compact else None
    except (binascii.Error, ValueError):
        return None


def fail(message: str) -> ValueError:
    return ValueError(message)


@given(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_ \né"))
def test_inline_base64_is_judged_as_the_standard_library_judged_it(text: str) -> None:
    # Inline images are decoded with pybase64 (SIMD); what it accepts and what it gives
    # must be what base64.b64decode(validate=True) did, so that no input changes meaning.
    assert _decode_base64(text, MAX, fail) == stdlib_decode(text)


def test_oversized_inline_image_is_refused() -> None:
    data = png(300, 300)
    with pytest.raises(InputValueError, match="larger than"):
        plan_image_inputs(workflow(base64.b64encode(data).decode()), SPECS, len(data) - 1)


def test_content_names_are_content_addressed() -> None:
    assert content_name(png(), "png") == content_name(png(), "png")
    assert content_name(png(), "png") != content_name(png(5, 5), "png")
    assert content_name(png(), "png").endswith(".png")


@pytest.mark.parametrize("entry", ["LoadImage", ".image", "LoadImage.", ""])
def test_bad_image_input_specs_are_refused(entry: str) -> None:
    with pytest.raises(ValueError, match=r"ClassType\.input_name"):
        parse_input_specs([entry])


def test_custom_image_input_specs() -> None:
    specs = parse_input_specs(["MyLoader.picture", "Other.Node.img"])
    assert specs == frozenset({("MyLoader", "picture"), ("Other.Node", "img")})


def test_seeds_of_minus_one_are_filled_and_every_seed_is_recorded() -> None:
    flow = {
        "1": {"class_type": "KSampler", "inputs": {"seed": -1, "steps": 3}},
        "2": {"class_type": "KSamplerAdvanced", "inputs": {"noise_seed": -1}},
        "3": {"class_type": "KSampler", "inputs": {"seed": 42}},
        "4": {"class_type": "KSampler", "inputs": {"seed": ["9", 0]}},
        "5": {"class_type": "Toggle", "inputs": {"seed": True}},
    }
    prepared, seeds = randomize_seeds(flow, random.Random(7))
    assert flow["1"]["inputs"]["seed"] == -1, "the caller's workflow is not changed"
    first = prepared["1"]["inputs"]["seed"]
    assert 0 <= first <= MAX_RANDOM_SEED and first != -1
    assert 0 <= prepared["2"]["inputs"]["noise_seed"] <= MAX_RANDOM_SEED
    assert prepared["3"]["inputs"]["seed"] == 42
    assert prepared["4"]["inputs"]["seed"] == ["9", 0]
    assert prepared["5"]["inputs"]["seed"] is True
    assert seeds == {
        "1": {"seed": first},
        "2": {"noise_seed": prepared["2"]["inputs"]["noise_seed"]},
        "3": {"seed": 42},
    }
    again, _ = randomize_seeds(flow, random.Random(8))
    assert again["1"]["inputs"]["seed"] != first
    # Inputs set in the copy later (an uploaded image's name) leave the caller's alone too.
    prepared["3"]["inputs"]["image"] = "uploaded.png"
    prepared["3"]["class_type"] = "Changed"
    assert flow["3"] == {"class_type": "KSampler", "inputs": {"seed": 42}}

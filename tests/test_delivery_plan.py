"""Pure parts of delivery: the per-request plan and image format conversion."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from agent.delivery.image_format import FormatError, ImageFormat
from agent.delivery.plan import (
    MAX_PRESIGN,
    DeliveryDefaults,
    DeliveryPlan,
    PlanError,
    parse_plan,
)

DEFAULTS = DeliveryDefaults(output_store="s3://bkt/p", presign=0, webhook_url="https://h/x")


def test_defaults_apply_when_the_request_says_nothing() -> None:
    plan = parse_plan({}, {}, DEFAULTS)
    assert plan == DeliveryPlan(output_store="s3://bkt/p", webhook_url="https://h/x")
    assert not plan.presign_asked
    assert parse_plan({}, {}, DeliveryDefaults()) == DeliveryPlan()


def test_request_values_override_defaults() -> None:
    headers = {"X-Output-Store": "s3://other/q", "X-Webhook-Url": "https://w/h"}
    plan = parse_plan(headers, {"presign": "60", "format": "WEBP", "quality": "55"}, DEFAULTS)
    assert plan.output_store == "s3://other/q"
    assert plan.webhook_url == "https://w/h"
    assert plan.presign == 60
    assert plan.presign_asked
    assert plan.image_format == ImageFormat("webp", 55)
    assert not DeliveryPlan(presign=60).presign_asked  # no store: nothing to presign


@given(st.floats(min_value=0, max_value=MAX_PRESIGN, allow_nan=False))
def test_presign_within_range_is_kept(seconds: float) -> None:
    assert parse_plan({}, {"presign": repr(seconds)}, DEFAULTS).presign == seconds


@given(st.one_of(st.floats(max_value=-1e-9), st.floats(min_value=MAX_PRESIGN + 1)))
def test_presign_out_of_range_is_refused(seconds: float) -> None:
    with pytest.raises(PlanError):
        parse_plan({}, {"presign": repr(seconds)}, DEFAULTS)


@pytest.mark.parametrize(
    "query",
    [
        {"presign": "soon"},
        {"format": "gif"},
        {"format": "jpeg", "quality": "0"},
        {"format": "jpeg", "quality": "101"},
        {"format": "jpeg", "quality": "high"},
        {"quality": "80"},
    ],
)
def test_bad_values_are_refused(query: dict[str, str]) -> None:
    with pytest.raises(PlanError):
        parse_plan({}, query, DEFAULTS)


@given(st.integers(min_value=1, max_value=100), st.sampled_from(["jpeg", "jpg", "webp", "JPEG"]))
def test_format_parse_accepts_every_quality(quality: int, name: str) -> None:
    parsed = ImageFormat.parse(name, str(quality))
    assert parsed is not None
    assert parsed.quality == quality
    assert parsed.name == ("webp" if name == "webp" else "jpeg")


def test_format_parse_without_format() -> None:
    assert ImageFormat.parse(None, None) is None
    assert ImageFormat.parse("", None) is None
    with pytest.raises(FormatError):
        ImageFormat.parse(None, "80")


def test_renaming_and_what_is_converted() -> None:
    jpeg = ImageFormat("jpeg")
    assert jpeg.renamed("ComfyUI_00001_.png") == "ComfyUI_00001_.jpg"
    assert ImageFormat("webp").renamed("a.b.png") == "a.b.webp"
    assert jpeg.applies_to("x.PNG")
    assert not jpeg.applies_to("clip.mp4")
    assert not jpeg.applies_to("anim.gif")
    assert jpeg.content_type == "image/jpeg"


def png_bytes(mode: str, size: tuple[int, int] = (8, 6)) -> bytes:
    out = io.BytesIO()
    color = {"RGBA": (10, 20, 30, 40), "LA": (10, 40), "L": 10, "RGB": (1, 2, 3)}[mode]
    Image.new(mode, size, color).save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA"])
@pytest.mark.parametrize("name", ["jpeg", "webp"])
def test_convert_bytes_every_mode(mode: str, name: str) -> None:
    converted = ImageFormat(name, 80).convert_bytes(png_bytes(mode))  # type: ignore[arg-type]
    assert converted is not None
    with Image.open(io.BytesIO(converted)) as image:
        assert image.format == name.upper()
        assert image.size == (8, 6)


def test_animations_and_non_images_pass_through(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (4, 4), (i * 40, 0, 0)) for i in range(3)]
    out = io.BytesIO()
    frames[0].save(out, format="WEBP", save_all=True, append_images=frames[1:])
    assert ImageFormat("jpeg").convert_bytes(out.getvalue()) is None
    assert ImageFormat("jpeg").convert_bytes(b"not an image") is None
    source = tmp_path / "a.png"
    source.write_bytes(b"garbage")
    assert not ImageFormat("webp").convert_file(source, tmp_path / "b.webp")
    assert not (tmp_path / "b.webp").exists()

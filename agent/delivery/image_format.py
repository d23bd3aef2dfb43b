"""`?format=jpeg|webp&quality=N`: convert still image outputs with Pillow (copies only).

Only files Pillow reads as a single-frame image are converted; animations, video, audio
and anything else pass through unchanged. Converting is CPU work: callers run it in a
thread. The original file is never touched: conversion writes a new file or new bytes.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from PIL import Image

FORMATS = {"jpeg": ("JPEG", ".jpg", "image/jpeg"), "webp": ("WEBP", ".webp", "image/webp")}
# Extensions worth opening as images; everything else is passed through without a look.
_IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"})
DEFAULT_QUALITY = 90


class FormatError(ValueError):
    """A format or quality that cannot be used; the message says which values can."""


@dataclass(frozen=True)
class ImageFormat:
    """Target format and quality (1-100) of converted image outputs."""

    name: Literal["jpeg", "webp"]
    quality: int = DEFAULT_QUALITY

    @classmethod
    def parse(cls, name: str | None, quality: str | None) -> ImageFormat | None:
        """From query values; None when no format is asked; FormatError when invalid."""
        if name is None or name == "":
            if quality is not None:
                raise FormatError("quality is only used with format=jpeg or format=webp")
            return None
        lowered = name.lower()
        if lowered == "jpg":
            lowered = "jpeg"
        if lowered not in FORMATS:
            raise FormatError(f"format must be jpeg or webp, not {name!r}")
        value = DEFAULT_QUALITY
        if quality is not None:
            try:
                value = int(quality)
            except ValueError:
                raise FormatError(f"quality must be an integer 1-100, not {quality!r}") from None
            if not 1 <= value <= 100:
                raise FormatError(f"quality must be 1-100, not {value}")
        return cls(lowered, value)  # type: ignore[arg-type]

    @property
    def content_type(self) -> str:
        """The MIME type of converted files."""
        return FORMATS[self.name][2]

    def renamed(self, file_name: str) -> str:
        """file_name with this format's extension."""
        return str(PurePosixPath(file_name).with_suffix(FORMATS[self.name][1]))

    def applies_to(self, file_name: str) -> bool:
        """Whether file_name looks like a still image this format may replace."""
        return PurePosixPath(file_name).suffix.lower() in _IMAGE_SUFFIXES

    def convert_bytes(self, data: bytes | bytearray) -> bytes | None:
        """The image in data, converted; None when data is not a single-frame image."""
        out = io.BytesIO()
        if not self._convert(io.BytesIO(data), out):
            return None
        return out.getvalue()

    def convert_file(self, source: Path, target: Path) -> bool:
        """Write source, converted, to target; False (nothing written) if not a still image."""
        with source.open("rb") as handle, io.BytesIO() as out:
            if not self._convert(handle, out):
                return False
            target.write_bytes(out.getvalue())
        return True

    def _convert(self, source: IO[bytes], out: io.BytesIO) -> bool:
        # Imported on first conversion: Pillow costs ~2 MB of every process that never
        # converts anything.
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(source) as image:
                if getattr(image, "n_frames", 1) != 1:
                    return False
                image.load()
                converted = _for_format(image, self.name)
                converted.save(out, format=FORMATS[self.name][0], quality=self.quality)
        except (UnidentifiedImageError, OSError, ValueError):
            return False
        return True


def _for_format(image: Image.Image, name: str) -> Image.Image:
    """An image mode the target format can store (JPEG has no alpha: flattened on white)."""
    from PIL import Image

    if name == "jpeg":
        if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            background = Image.new("RGB", rgba.size, (255, 255, 255))
            background.paste(rgba, mask=rgba.getchannel("A"))
            return background
        return image.convert("RGB") if image.mode not in ("RGB", "L") else image
    if image.mode not in ("RGB", "RGBA", "L", "LA"):
        return image.convert("RGBA" if "transparency" in image.info else "RGB")
    return image

"""Tiny standard-library writers for the media files the fake ComfyUI's nodes produce.

Every file is real and decodable (PNG, baseline JPEG, animated GIF, FLAC, MP4 with Motion-JPEG
frames), but the pictures are flat colours and the audio is silence: the fake only needs bytes a
client can download, sniff and store, not content anyone looks at. No Pillow or numpy on purpose,
so the fake runs wherever aiohttp does.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Sequence

RGB = tuple[int, int, int]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# --- PNG -----------------------------------------------------------------------------------------


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def png_bytes(width: int, height: int, rgb: RGB, text: dict[str, str] | None = None) -> bytes:
    """An 8-bit RGB PNG filled with one colour, with optional tEXt chunks (ComfyUI stores the
    prompt and workflow JSON there)."""
    row = b"\x00" + bytes(rgb) * width  # filter byte 0 (None) per scanline
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunks = [_png_chunk(b"IHDR", header)]
    for key, value in (text or {}).items():
        chunks.append(_png_chunk(b"tEXt", key.encode("latin-1") + b"\x00" + value.encode()))
    chunks.append(_png_chunk(b"IDAT", zlib.compress(row * height, 6)))
    chunks.append(_png_chunk(b"IEND", b""))
    return PNG_SIGNATURE + b"".join(chunks)


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a PNG or GIF from its header, or None for anything else."""
    if data.startswith(PNG_SIGNATURE) and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    if data[:6] in (b"GIF87a", b"GIF89a"):
        width, height = struct.unpack("<HH", data[6:10])
        return int(width), int(height)
    return None


# --- JPEG ----------------------------------------------------------------------------------------


class _BitWriter:
    """MSB-first bit packer with JPEG byte stuffing (0xFF is followed by 0x00)."""

    def __init__(self) -> None:
        self.out = bytearray()
        self._acc = 0
        self._bits = 0

    def write(self, value: int, length: int) -> None:
        for shift in range(length - 1, -1, -1):
            self._acc = (self._acc << 1) | ((value >> shift) & 1)
            self._bits += 1
            if self._bits == 8:
                self._emit()

    def _emit(self) -> None:
        self.out.append(self._acc)
        if self._acc == 0xFF:
            self.out.append(0x00)
        self._acc = 0
        self._bits = 0

    def flush(self) -> bytes:
        while self._bits:  # pad with 1-bits, as the standard asks
            self.write(1, 1)
        return bytes(self.out)


def _segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">HH", 0xFF00 | marker, len(payload) + 2) + payload


def _huffman_table(table_class_id: int, symbols: Sequence[int], length: int) -> bytes:
    counts = [0] * 16
    counts[length - 1] = len(symbols)
    return bytes([table_class_id, *counts, *symbols])


def jpeg_gray(width: int, height: int, level: int) -> bytes:
    """A baseline greyscale JPEG of one flat grey level (0-255).

    A flat 8x8 block has only a DC coefficient, so the scan is one DC difference for the first
    block and "no change, end of block" for the rest: no DCT or real Huffman coding needed.
    """
    blocks = math.ceil(width / 8) * math.ceil(height / 8)
    dc = 8 * (max(0, min(255, level)) - 128)  # DC of a flat block with an all-ones quant table
    category = abs(dc).bit_length()
    dc_symbols = [0] if category == 0 else [0, category]
    dc_code_len = 1 if category == 0 else 2  # codes 0 / 00, 01: never all ones
    bits = _BitWriter()
    for index in range(blocks):
        if index == 0 and category:
            bits.write(1, dc_code_len)  # second symbol: `category`
            magnitude = dc if dc > 0 else dc + (1 << category) - 1
            bits.write(magnitude, category)
        else:
            bits.write(0, dc_code_len)  # first symbol: difference 0
        bits.write(0, 1)  # AC table's only symbol: end of block
    return b"".join(
        [
            b"\xff\xd8",
            _segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"),
            _segment(0xDB, b"\x00" + b"\x01" * 64),
            _segment(0xC0, struct.pack(">BHHBBBB", 8, height, width, 1, 1, 0x11, 0)),
            _segment(0xC4, _huffman_table(0x00, dc_symbols, dc_code_len)),
            _segment(0xC4, _huffman_table(0x10, [0x00], 1)),
            _segment(0xDA, bytes([1, 1, 0x00, 0, 63, 0])),
            bits.flush(),
            b"\xff\xd9",
        ]
    )


# --- GIF -----------------------------------------------------------------------------------------


def _gif_frame_data(pixel_count: int, index: int) -> bytes:
    """LZW data for `pixel_count` pixels of palette `index`, written "uncompressed": a clear
    code before every two literals keeps the code width at 3 bits, so no dictionary is needed."""
    clear, end = 4, 5
    codes: list[int] = []
    for start in range(0, pixel_count, 2):
        codes.append(clear)
        codes.extend([index] * min(2, pixel_count - start))
    codes.append(end)
    acc = 0
    nbits = 0
    out = bytearray()
    for code in codes:  # GIF packs codes least-significant bit first
        acc |= code << nbits
        nbits += 3
        while nbits >= 8:
            out.append(acc & 0xFF)
            acc >>= 8
            nbits -= 8
    if nbits:
        out.append(acc & 0xFF)
    blocks = b"".join(
        bytes([len(out[i : i + 255])]) + out[i : i + 255] for i in range(0, len(out), 255)
    )
    return b"\x02" + blocks + b"\x00"


def gif_bytes(
    width: int, height: int, colors: Sequence[RGB], delay_cs: int, loop: int = 0
) -> bytes:
    """An animated GIF89a: one flat frame per colour (at most 4), `delay_cs` hundredths apart."""
    palette = [*colors[:4], *[(0, 0, 0)] * (4 - len(colors[:4]))]
    parts = [
        b"GIF89a",
        struct.pack("<HHBBB", width, height, 0x81, 0, 0),  # global table of 4 colours
        b"".join(bytes(c) for c in palette),
        b"\x21\xff\x0bNETSCAPE2.0\x03\x01" + struct.pack("<H", loop) + b"\x00",
    ]
    for index in range(len(colors[:4])):
        parts.append(b"\x21\xf9\x04\x04" + struct.pack("<H", delay_cs) + b"\x00\x00")
        parts.append(b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0))
        parts.append(_gif_frame_data(width * height, index))
    parts.append(b"\x3b")
    return b"".join(parts)


# --- FLAC ----------------------------------------------------------------------------------------


def _crc8(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def _crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def _utf8_number(value: int) -> bytes:
    """FLAC's UTF-8-style variable-length frame number."""
    if value < 0x80:
        return bytes([value])
    length = 2
    while value >= 1 << (5 * length + 1):
        length += 1
    tail = [0x80 | ((value >> (6 * i)) & 0x3F) for i in range(length - 1)][::-1]
    head = ((0xFF << (8 - length)) & 0xFF) | (value >> (6 * (length - 1)))
    return bytes([head, *tail])


FLAC_BLOCK = 4096


def flac_silence(sample_rate: int, channels: int, total_samples: int) -> bytes:
    """A 16-bit FLAC of silence: every frame is one CONSTANT subframe (value 0) per channel."""
    info = struct.pack(">HH", FLAC_BLOCK, FLAC_BLOCK) + b"\x00" * 6
    packed = (sample_rate << 44) | ((channels - 1) << 41) | (15 << 36) | total_samples
    info += struct.pack(">Q", packed) + b"\x00" * 16  # MD5 of zero means "not computed"
    out = [b"fLaC", bytes([0x80]) + len(info).to_bytes(3, "big") + info]
    for number, start in enumerate(range(0, total_samples, FLAC_BLOCK)):
        size = min(FLAC_BLOCK, total_samples - start)
        # block size: 16-bit value follows; sample rate: from STREAMINFO; 16 bits per sample
        header = bytes([0xFF, 0xF8, 0x70, ((channels - 1) << 4) | (0b100 << 1)])
        header += _utf8_number(number) + struct.pack(">H", size - 1)
        frame = header + bytes([_crc8(header)]) + b"\x00\x00\x00" * channels
        out.append(frame + struct.pack(">H", _crc16(frame)))
    return b"".join(out)


# --- MP4 -----------------------------------------------------------------------------------------


def _box(kind: bytes, *payload: bytes) -> bytes:
    body = b"".join(payload)
    return struct.pack(">I", len(body) + 8) + kind + body


def _full_box(kind: bytes, version_flags: int, *payload: bytes) -> bytes:
    return _box(kind, struct.pack(">I", version_flags), *payload)


_MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)


def _sample_table(width: int, height: int, sizes: list[int], delta: int, offset: int) -> bytes:
    entry = _box(
        b"jpeg",
        b"\x00" * 6 + struct.pack(">H", 1) + b"\x00" * 16,
        struct.pack(">HHIIIH", width, height, 0x480000, 0x480000, 0, 1),
        bytes([10]) + b"Photo-JPEG".ljust(31, b"\x00"),
        struct.pack(">Hh", 0x18, -1),
    )
    return _box(
        b"stbl",
        _full_box(b"stsd", 0, struct.pack(">I", 1), entry),
        _full_box(b"stts", 0, struct.pack(">III", 1, len(sizes), delta)),
        _full_box(b"stsc", 0, struct.pack(">IIII", 1, 1, len(sizes), 1)),
        _full_box(
            b"stsz", 0, struct.pack(">II", 0, len(sizes)), struct.pack(f">{len(sizes)}I", *sizes)
        ),
        _full_box(b"stco", 0, struct.pack(">II", 1, offset)),
    )


def mp4_mjpeg(width: int, height: int, frames: Sequence[bytes], fps: float) -> bytes:
    """An MP4 (ISO BMFF) with one Motion-JPEG video track holding `frames` (JPEG bytes)."""
    timescale = 1000
    delta = max(1, round(timescale / fps))
    duration = delta * len(frames)
    ftyp = _box(b"ftyp", b"isom", struct.pack(">I", 512), b"isomiso2mp41")
    mdat = _box(b"mdat", *frames)
    offset = len(ftyp) + 8  # samples start right after the mdat header
    stbl = _sample_table(width, height, [len(f) for f in frames], delta, offset)
    minf = _box(
        b"minf",
        _full_box(b"vmhd", 1, b"\x00" * 8),
        _box(b"dinf", _full_box(b"dref", 0, struct.pack(">I", 1), _full_box(b"url ", 1))),
        stbl,
    )
    mdia = _box(
        b"mdia",
        _full_box(b"mdhd", 0, struct.pack(">IIIIHH", 0, 0, timescale, duration, 0x55C4, 0)),
        _full_box(b"hdlr", 0, b"\x00" * 4 + b"vide" + b"\x00" * 12 + b"VideoHandler\x00"),
        minf,
    )
    tkhd = _full_box(
        b"tkhd",
        3,  # enabled, in movie
        struct.pack(">IIIII", 0, 0, 1, 0, duration),
        b"\x00" * 8 + struct.pack(">hhhH", 0, 0, 0, 0),
        _MATRIX,
        struct.pack(">II", width << 16, height << 16),
    )
    mvhd = _full_box(
        b"mvhd",
        0,
        struct.pack(">IIIIIH", 0, 0, timescale, duration, 0x10000, 0x100),
        b"\x00" * 10,
        _MATRIX,
        b"\x00" * 24,
        struct.pack(">I", 2),
    )
    moov = _box(b"moov", mvhd, _box(b"trak", tkhd, mdia))
    return ftyp + mdat + moov

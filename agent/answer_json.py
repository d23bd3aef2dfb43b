"""JSON answers that carry output files inline, without scanning their base64.

json.dumps looks at every character of a string for something to escape. The base64 of a
1.5 MB image is 2 MB of characters that never need escaping, and that scan took about
13 ms of the event loop per image (plus the str's encoding back to bytes). Here a file's
base64 stays bytes (`Base64Text`) and goes into the rendered answer as it is: what is
scanned is the answer without its files.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

import pybase64


@dataclass(frozen=True, slots=True)
class Base64Text:
    """A file's base64 (standard alphabet, padded) as ASCII bytes: a JSON string as is.

    Made by `encode` only, so it holds nothing that would need escaping. A wrapper, not a
    bytes subclass: making one of those copies the megabytes again.
    """

    data: bytes

    @classmethod
    def encode(cls, data: bytes | bytearray) -> Base64Text:
        """The base64 of data."""
        return cls(pybase64.b64encode(data))

    def text(self) -> str:
        """The base64 as a str (what json.loads gives back for it)."""
        return self.data.decode("ascii")


def dumps_answer(body: Any) -> bytes:
    """json.dumps(body).encode(), with each Base64Text written as the JSON string it is."""
    # A per-answer random marker stands in for each file while the rest is rendered; no
    # string of the answer can contain it by chance, nor by design (it is not known).
    marker = secrets.token_hex(16)
    files: list[bytes] = []

    def stand_in(value: object) -> str:
        if isinstance(value, Base64Text):
            files.append(value.data)
            return f"{marker}:{len(files) - 1}"
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")

    text = json.dumps(body, default=stand_in)
    if not files:
        return text.encode()
    pieces = text.split(f'"{marker}:')
    parts = [pieces[0].encode()]
    for piece in pieces[1:]:
        index, rest = piece.split('"', 1)
        parts += [b'"', files[int(index)], b'"', rest.encode()]
    return b"".join(parts)

"""Answers with inline files (agent/answer_json.py): the same bytes json.dumps would give."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.answer_json import Base64Text, dumps_answer


def as_text(value: Any) -> Any:
    """value with every Base64Text as the str json.dumps is given today."""
    if isinstance(value, Base64Text):
        return value.text()
    if isinstance(value, dict):
        return {key: as_text(item) for key, item in value.items()}
    if isinstance(value, list):
        return [as_text(item) for item in value]
    return value


files = st.binary(max_size=300).map(Base64Text.encode)
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
bodies = st.recursive(
    scalars | files,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=30,
)


@given(bodies)
def test_any_body_renders_as_json_dumps_renders_its_text(body: Any) -> None:
    assert dumps_answer(body) == json.dumps(as_text(body)).encode()


@given(st.text(), st.binary(max_size=100))
def test_strings_that_look_like_the_stand_in_stay_strings(text: str, data: bytes) -> None:
    # Quotes, colons and digits in the answer's own strings (node ids, file names, errors)
    # are escaped or left as they are; only the answer's files are spliced.
    body = {f'"{text}:0"': [text, Base64Text.encode(data), f'":1"{text}']}
    assert json.loads(dumps_answer(body)) == as_text(body)


def test_a_sync_answer_carries_the_files_base64() -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 64
    body = {
        "9": {"max": 1, "value": 1, "images": [{"filename": "a.png"}]},
        "3": {"max": 1, "value": 1, "results": [Base64Text.encode(png)] * 2},
    }
    rendered = json.loads(dumps_answer(body))
    assert [base64.b64decode(item) for item in rendered["3"]["results"]] == [png, png]
    assert rendered["9"] == body["9"]


def test_no_files_is_plain_json_dumps() -> None:
    body = {"message": "ResultFetchError", "error": "é ✓", "progress": {}}
    assert dumps_answer(body) == json.dumps(body).encode()


def test_what_json_cannot_hold_is_refused_as_json_dumps_refuses_it() -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        dumps_answer({"raw": b"bytes that are no Base64Text"})


def test_base64_text_is_the_standard_base64() -> None:
    data = bytes(range(256)) * 3
    assert Base64Text.encode(data).text() == base64.b64encode(data).decode()
    assert Base64Text.encode(data) == Base64Text.encode(data)

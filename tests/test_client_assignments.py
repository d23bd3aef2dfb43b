"""`--set` parsing, file values and application: agent/client/assignments.py (pure)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.client.assignments import (
    Assignment,
    app_image_params,
    app_params,
    apply_to_workflow,
    file_value,
    is_image_input,
    node_order,
    parse_assignment,
    parse_value,
)
from agent.client.errors import ClientError, ExitCode

WORKFLOW: dict[str, Any] = {
    "3": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 20, "model": ["4", 0]}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a dog", "clip": ["4", 1]}},
    "10": {"class_type": "LoadImage", "inputs": {"image": "in.png"}},
}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=10,
)


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("5", 5),
        ("-1", -1),
        ("2.5", 2.5),
        ("true", True),
        ("null", None),
        ('"5"', "5"),
        ("[1, 2]", [1, 2]),
        ('{"a": 1}', {"a": 1}),
        ("a cat", "a cat"),
        ("", ""),
        ("NaN", "NaN"),
        ("Infinity", "Infinity"),
        ("-Infinity", "-Infinity"),
        ("[1, NaN]", "[1, NaN]"),
        ("01", "01"),
        ("[" * 100_000, "[" * 100_000),
    ],
)
def test_values_are_json_when_they_parse_else_text(raw: str, value: Any) -> None:
    assert parse_value(raw) == value


@given(json_values)
def test_any_json_value_round_trips(value: Any) -> None:
    assert parse_value(json.dumps(value)) == value


@given(st.text())
def test_any_text_gives_a_json_value(raw: str) -> None:
    value = parse_value(raw)
    json.dumps(value, allow_nan=False)  # never NaN/Infinity, always sendable
    if not isinstance(value, str) or value != raw:
        assert json.loads(raw) == value


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("6.text=a cat", Assignment("6", "text", value="a cat")),
        ("3.seed=42", Assignment("3", "seed", value=42)),
        ("3.seed=", Assignment("3", "seed", value="")),
        ("6.text=a=b", Assignment("6", "text", value="a=b")),
        ("6.text.x=1", Assignment("6", "text.x", value=1)),
        (" 6.text=1", Assignment("6", "text", value=1)),
        ("10.image=@cat.png", Assignment("10", "image", file="cat.png")),
        ("6.text=@@home", Assignment("6", "text", value="@home")),
        ("6.text=@@", Assignment("6", "text", value="@")),
    ],
)
def test_assignments_parse(text: str, expected: Assignment) -> None:
    assert parse_assignment(text) == expected


@pytest.mark.parametrize("text", ["6.text", "text=1", ".text=1", "6.=1", "=1", "", "6.text=@"])
def test_malformed_assignments_are_usage_errors(text: str) -> None:
    with pytest.raises(ClientError) as caught:
        parse_assignment(text)
    assert caught.value.code is ExitCode.BAD_INPUT
    assert "--set" in caught.value.message


@given(
    st.text(st.characters(blacklist_characters=".="), min_size=1).filter(lambda s: s.strip() == s),
    st.text(st.characters(blacklist_characters="="), min_size=1).filter(lambda s: s.strip() == s),
    json_values,
)
def test_assignment_of_any_target_and_value(node: str, name: str, value: Any) -> None:
    assignment = parse_assignment(f"{node}.{name}={json.dumps(value)}")
    assert (assignment.node, assignment.input) == (node, name)
    assert assignment.value == value and assignment.file is None
    assert assignment.name == f"{node}.{name}"


def test_text_files_are_text_without_the_last_newline() -> None:
    assert file_value(b"a cat\n", image=False) == "a cat"
    assert file_value(b"a cat\n\n", image=False) == "a cat\n"
    assert file_value("café".encode(), image=False) == "café"
    assert file_value(b"", image=False) == ""


@given(st.binary())
def test_image_inputs_get_base64_of_any_file(data: bytes) -> None:
    assert base64.b64decode(file_value(data, image=True)) == data


def test_binary_files_become_base64_even_for_other_inputs() -> None:
    data = b"\x89PNG\r\n\x1a\n\xff\xfe"
    assert base64.b64decode(file_value(data, image=False)) == data


def test_image_inputs_are_load_image_nodes() -> None:
    assert is_image_input(WORKFLOW, "10", "image")
    assert not is_image_input(WORKFLOW, "6", "text")
    assert not is_image_input(WORKFLOW, "99", "image")
    assert is_image_input({"1": {"class_type": "LoadImageMask", "inputs": {}}}, "1", "image")


def test_apply_sets_inputs_on_a_copy() -> None:
    changed = apply_to_workflow(
        WORKFLOW,
        [(Assignment("3", "seed", 7), 7), (Assignment("6", "text", "x"), "a cat")],
    )
    assert changed["3"]["inputs"]["seed"] == 7
    assert changed["6"]["inputs"]["text"] == "a cat"
    assert changed["3"]["inputs"]["model"] == ["4", 0]
    assert WORKFLOW["3"]["inputs"]["seed"] == 1  # the original is untouched


def test_later_assignments_win() -> None:
    changed = apply_to_workflow(
        WORKFLOW, [(Assignment("3", "seed"), 1), (Assignment("3", "seed"), 2)]
    )
    assert changed["3"]["inputs"]["seed"] == 2


def test_unknown_nodes_and_inputs_are_refused_naming_what_exists() -> None:
    with pytest.raises(ClientError) as caught:
        apply_to_workflow(WORKFLOW, [(Assignment("7", "seed"), 1)])
    assert caught.value.code is ExitCode.BAD_INPUT
    assert "no node '7'" in caught.value.message and "3, 6, 10" in caught.value.message
    with pytest.raises(ClientError) as caught:
        apply_to_workflow(WORKFLOW, [(Assignment("3", "sed"), 1)])
    assert "node 3 (KSampler) has no input 'sed'" in caught.value.message
    assert "seed, steps, model" in caught.value.message


def test_app_params_are_named_node_dot_key() -> None:
    values = [(Assignment("6", "text"), "a cat"), (Assignment("3", "seed"), 5)]
    assert app_params(values) == {"6.text": "a cat", "3.seed": 5}


def test_app_image_params_are_found_in_groups_and_meta_edit() -> None:
    app = {
        "params": [
            {"type": "image", "id": "10", "key": "image", "title": "Photo"},
            {"type": "string", "id": "6", "key": "text"},
            {
                "type": "group",
                "title": "More",
                "children": [{"type": "image", "id": "11", "key": "mask"}],
            },
        ],
        "prompt": {
            "12": {
                "class_type": "LoadImage",
                "inputs": {},
                "_meta": {
                    "edit": [
                        {"type": "image", "key": "image"},
                        {"type": "image", "id": "13", "key": "image"},
                    ]
                },
            },
            "14": "not a node",
        },
    }
    assert app_image_params(app) == {"10.image", "11.mask", "12.image", "13.image"}
    assert app_image_params({}) == set()
    assert app_image_params({"params": "nonsense", "prompt": []}) == set()


@given(st.lists(st.one_of(st.integers(0, 10**6).map(str), st.text(min_size=1))))
def test_node_order_puts_numbers_first_in_numeric_order(ids: list[str]) -> None:
    ordered = sorted(ids, key=node_order)
    numbers = [node for node in ordered if node.isascii() and node.isdigit()]
    assert ordered[: len(numbers)] == numbers
    assert [int(n) for n in numbers] == sorted(int(n) for n in numbers)


@pytest.mark.parametrize("odd", ["²", "١٢", "1²", "+1", " 1"])
def test_node_order_takes_odd_digits_as_names(odd: str) -> None:
    assert node_order(odd) == (1, odd)
    assert sorted([odd, "2", "10"], key=node_order) == ["2", "10", odd]

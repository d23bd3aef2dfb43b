"""App parameter validation and substitution (agent/apps/params.py): pure, exhaustive."""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.apps.panels import App
from agent.apps.params import ParamError, apply_params
from agent.apps.parse import build_app
from agent.inputs import content_name

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
MAX_IMAGE = 1024 * 1024


def make_app() -> App:
    prompt = {
        "3": {
            "class_type": "KSampler",
            "inputs": {"seed": 5, "steps": 20, "cfg": 7.5, "sampler_name": "euler"},
        },
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["4", 1]}},
        "10": {"class_type": "LoadImage", "inputs": {"image": "cat.png"}},
        "11": {"class_type": "Custom", "inputs": {}},
    }
    params = [
        {"type": "string", "id": "6", "key": "text", "title": "Prompt"},
        {"type": "number", "id": "3", "key": "steps", "min": 1, "max": 50, "step": 1},
        {"type": "number", "id": "3", "key": "cfg", "min": 0, "max": 20, "step": 0.5},
        {"type": "number", "id": "3", "key": "seed", "min": -1},
        {"type": "select", "id": "3", "key": "sampler_name", "options": "euler,dpmpp_2m"},
        {"type": "select", "id": "5", "key": "width", "options": "512,768"},
        {"type": "select", "id": "5", "key": "height", "options": [512, 640.5]},
        {"type": "image", "id": "10", "key": "image", "title": "Photo"},
        {
            "type": "group",
            "title": "Hidden bits",
            "children": [
                {"type": "string", "id": "11", "key": "secret", "hidden": True},
                {"type": "image", "id": "11", "key": "style", "options": ["a.png", "b.png"]},
            ],
        },
    ]
    return build_app({"title": "t", "prompt": prompt, "params": params}, "t")


APP = make_app()


def apply(values: dict[str, Any]) -> dict[str, Any]:
    return apply_params(APP, values, max_image_bytes=MAX_IMAGE).workflow


def refused(values: dict[str, Any]) -> ParamError:
    with pytest.raises(ParamError) as info:
        apply(values)
    return info.value


def test_no_values_keep_the_workflow_as_it_is_and_copy_it() -> None:
    result = apply({})
    assert result == APP.prompt
    result["6"]["inputs"]["text"] = "changed"
    assert APP.prompt["6"]["inputs"]["text"] == "a cat"


def test_every_type_is_substituted() -> None:
    result = apply(
        {
            "6.text": "a dog",
            "3.steps": "30",
            "3.cfg": 6.5,
            "3.sampler_name": "dpmpp_2m",
            "5.width": "768",
            "10.image": "dog.png",
            "11.style": "b.png",
        }
    )
    assert result["6"]["inputs"] == {"text": "a dog", "clip": ["4", 1]}
    assert result["3"]["inputs"]["steps"] == 30
    assert isinstance(result["3"]["inputs"]["steps"], int)
    assert result["3"]["inputs"]["cfg"] == 6.5
    assert result["3"]["inputs"]["sampler_name"] == "dpmpp_2m"
    assert result["5"]["inputs"]["width"] == 768  # numeric option for a numeric input
    assert result["10"]["inputs"]["image"] == "dog.png"
    assert result["11"]["inputs"]["style"] == "b.png"  # the node had no such input yet


def test_form_strings_become_numbers_of_the_inputs_kind() -> None:
    assert apply({"3.steps": " 7 "})["3"]["inputs"]["steps"] == 7
    assert apply({"3.steps": 7.0})["3"]["inputs"]["steps"] == 7
    cfg = apply({"3.cfg": "7"})["3"]["inputs"]["cfg"]
    assert cfg == 7.0 and isinstance(cfg, float)  # the workflow's cfg is a float
    assert apply({"3.cfg": "1e1"})["3"]["inputs"]["cfg"] == 10.0


def test_big_seeds_stay_exact() -> None:
    seed = 2**63 + 1
    assert apply({"3.seed": str(seed)})["3"]["inputs"]["seed"] == seed
    assert apply({"3.seed": seed})["3"]["inputs"]["seed"] == seed
    assert apply({"3.seed": "-1"})["3"]["inputs"]["seed"] == -1


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("3.steps", 0, "less than the minimum 1"),
        ("3.steps", "51", "more than the maximum 50"),
        ("3.steps", "2.5", "not a multiple of the step 1"),
        ("3.cfg", 0.3, "not a multiple of the step 0.5"),
        ("3.steps", "", "not empty text"),
        ("3.steps", "ten", "must be a number, not 'ten'"),
        ("3.steps", True, "not a boolean"),
        ("3.steps", None, "not null"),
        ("3.steps", [1], "not a list"),
        ("3.cfg", "nan", "finite"),
        ("3.cfg", "inf", "finite"),
        ("6.text", {"a": 1}, "must be text, not an object"),
        ("6.text", False, "must be text, not a boolean"),
        ("3.sampler_name", "ddim", "not one of the options (euler, dpmpp_2m)"),
        ("3.sampler_name", 1, "not one of the options"),
        ("5.height", "640", "not one of the options"),
        ("10.image", "", "must be an image"),
        ("10.image", 5, "must be an image"),
        ("10.image", "not an image at all, with spaces", "neither a file name"),
        ("10.image", "data:image/png;base64,AAAA", "not an image"),
        ("10.image", "data:text/plain,hello", "base64-encoded"),
        ("11.style", "c.png", "one of the app's images"),
        ("11.secret", "x", "hidden"),
        ("9.nope", "x", "unknown parameter"),
        ("6.clip", "x", "unknown parameter"),
    ],
)
def test_bad_values_are_named_and_explained(name: str, value: Any, reason: str) -> None:
    error = refused({name: value})
    assert error.param == name
    assert reason in str(error)
    detail = error.detail()
    assert detail["type"] == "param_error"
    assert detail["param"] == name
    assert detail["node_id"] == name.partition(".")[0]


def test_unknown_parameter_lists_the_known_ones_but_not_hidden() -> None:
    message = str(refused({"x.y": 1}))
    assert "6.text" in message and "11.style" in message
    assert "11.secret" not in message


def test_every_problem_is_reported_and_nothing_is_applied() -> None:
    before = copy.deepcopy(APP.prompt)
    error = refused({"6.text": "fine", "3.steps": 0, "x.y": 1})
    assert [name for name, _ in error.problems] == ["3.steps", "x.y"]
    assert [e["param"] for e in error.detail()["details"]["errors"]] == ["3.steps", "x.y"]
    assert APP.prompt == before


def test_image_forms_of_loadimage_are_accepted() -> None:
    b64 = base64.b64encode(PNG).decode()
    for value in (
        "cat.png",
        "sub/cat.png [input]",
        "https://example.com/cat.png",
        b64,
        f"data:image/png;base64,{b64}",
    ):
        assert apply({"10.image": value})["10"]["inputs"]["image"] == value


def test_too_large_inline_image_is_refused() -> None:
    big = base64.b64encode(PNG + b"\0" * 2048).decode()
    with pytest.raises(ParamError, match="larger than 1024 bytes"):
        apply_params(APP, {"10.image": big}, max_image_bytes=1024)


def test_recorded_params_are_the_applied_values_with_inline_images_named() -> None:
    b64 = base64.b64encode(PNG).decode()
    call = apply_params(
        APP,
        {"3.steps": "30", "10.image": f"data:image/png;base64,{b64}", "6.text": "x"},
        max_image_bytes=MAX_IMAGE,
    )
    name = call.workflow["10"]["inputs"]["image"]
    assert name.startswith("data:")  # uploaded by the preparer later, like any LoadImage
    assert call.params == {"3.steps": 30, "10.image": content_name(PNG, "png"), "6.text": "x"}
    url = apply_params(APP, {"10.image": "https://x.test/a.png"}, max_image_bytes=MAX_IMAGE)
    assert url.params == {"10.image": "https://x.test/a.png"}


def test_select_matches_text_to_numeric_options() -> None:
    assert apply({"5.height": "512"})["5"]["inputs"]["height"] == 512
    assert apply({"5.height": 640.5})["5"]["inputs"]["height"] == 640.5
    assert apply({"5.height": "640.5"})["5"]["inputs"]["height"] == 640.5


def test_numbers_as_text_for_string_parameters() -> None:
    assert apply({"6.text": 42})["6"]["inputs"]["text"] == "42"


@settings(deadline=None)  # pure and fast; a loaded machine may stall it
@given(st.integers(min_value=1, max_value=50))
def test_any_integer_in_range_is_accepted_as_text_or_number(steps: int) -> None:
    assert apply({"3.steps": str(steps)})["3"]["inputs"]["steps"] == steps
    assert apply({"3.steps": steps})["3"]["inputs"]["steps"] == steps


@settings(deadline=None)  # pure and fast; a loaded machine may stall it
@given(st.integers(min_value=-1000, max_value=1000))
def test_out_of_range_integers_are_refused(steps: int) -> None:
    if 1 <= steps <= 50:
        return
    with pytest.raises(ParamError):
        apply({"3.steps": steps})


@settings(deadline=None)  # pure and fast; a loaded machine may stall it
@given(st.integers(min_value=0, max_value=40))
def test_half_steps_of_cfg(halves: int) -> None:
    value = halves / 2
    assert apply({"3.cfg": str(value)})["3"]["inputs"]["cfg"] == value


@settings(deadline=None)  # pure and fast; a loaded machine may stall it
@given(st.floats(min_value=0, max_value=20, allow_nan=False))
def test_cfg_off_the_half_grid_is_refused(value: float) -> None:
    if abs(value * 2 - round(value * 2)) < 1e-6:
        return
    with pytest.raises(ParamError, match="step"):
        apply({"3.cfg": value})


@settings(deadline=None)  # pure and fast; a loaded machine may stall it
@given(st.text(max_size=200))
def test_any_text_is_a_valid_prompt(text: str) -> None:
    assert apply({"6.text": text})["6"]["inputs"]["text"] == text


@settings(deadline=None)  # pure and fast; a loaded machine may stall it
@given(st.dictionaries(st.text(max_size=8), st.none() | st.integers() | st.text(max_size=8)))
def test_arbitrary_values_either_apply_or_raise_param_error(values: dict[str, Any]) -> None:
    try:
        result = apply(values)
    except ParamError as exc:
        assert exc.problems
        assert all(name in values for name, _ in exc.problems)
    else:
        assert set(result) == set(APP.prompt)

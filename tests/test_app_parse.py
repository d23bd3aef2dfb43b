"""App files: panels, ids, `_meta.edit`, broken entries (agent/apps/parse.py, panels.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.apps.panels import Panel
from agent.apps.parse import AppDefinitionError, build_app, parse_app_file


def workflow() -> dict[str, Any]:
    return {
        "3": {"class_type": "KSampler", "inputs": {"seed": 5, "steps": 20, "cfg": 7.5}},
        "6": {
            "class_type": "CLIPTextEncode",
            "inputs": {"text": "a cat", "clip": ["4", 1]},
            "_meta": {"title": "Positive"},
        },
        "10": {"class_type": "LoadImage", "inputs": {"image": "cat.png"}},
    }


def app_object(**extra: Any) -> dict[str, Any]:
    return {
        "title": "Cats",
        "prompt": workflow(),
        "params": [{"type": "string", "id": "6", "key": "text", "title": "Prompt"}],
        **extra,
    }


def parse(document: Any, stem: str = "cats") -> tuple[list[Any], list[Any]]:
    return parse_app_file(stem, f"{stem}.json", json.dumps(document).encode())


def test_one_app_file_is_named_by_its_stem() -> None:
    apps, problems = parse(app_object())
    assert problems == []
    assert [a.id for a in apps] == ["cats"]
    app = apps[0]
    assert app.title == "Cats"
    assert list(app.parameters) == ["6.text"]
    assert app.source == "cats.json"


def test_list_file_ids_count_from_one_in_list_order() -> None:
    apps, problems = parse([app_object(), app_object(title="Two"), app_object(id="mine")])
    assert problems == []
    assert [a.id for a in apps] == ["cats-1", "cats-2", "mine"]


def test_one_element_list_is_still_a_list_file() -> None:
    apps, _ = parse([app_object()])
    assert [a.id for a in apps] == ["cats-1"]


def test_explicit_id_wins_over_the_stem() -> None:
    apps, _ = parse(app_object(id="portrait.v2"))
    assert apps[0].id == "portrait.v2"


@pytest.mark.parametrize("bad", ["-x", "", "a b", "x" * 129, "../etc", ".hidden"])
def test_ids_outside_the_task_id_charset_are_refused(bad: str) -> None:
    apps, problems = parse(app_object(id=bad))
    assert apps == []
    assert "app id" in problems[0].message or "id" in problems[0].message


def test_stem_outside_the_charset_is_refused_with_the_file_named() -> None:
    apps, problems = parse(app_object(), stem="my app")
    assert apps == []
    assert problems[0].source == "my app.json"


def test_broken_entry_is_skipped_and_the_rest_loads() -> None:
    broken = {"title": "no prompt"}
    apps, problems = parse([app_object(), broken, app_object()])
    assert [a.id for a in apps] == ["cats-1", "cats-3"]
    assert len(problems) == 1
    assert problems[0].app_id == "cats-2"
    assert "prompt" in problems[0].message


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b'"text"', "app object or a list"),
        (b"42", "app object or a list"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_unreadable_files_name_the_reason(raw: bytes, reason: str) -> None:
    apps, problems = parse_app_file("x", "x.json", raw)
    assert apps == []
    assert reason in problems[0].message


def test_title_defaults_to_the_id() -> None:
    obj = app_object()
    del obj["title"]
    (app,), _ = parse(obj)
    assert app.title == "cats"


def test_describe_is_a_superset_of_the_seed_entry() -> None:
    obj = app_object(description="Makes cats")
    (app,), _ = parse(obj)
    body = app.describe()
    assert body["id"] == "cats"
    assert body["title"] == obj["title"]
    assert body["prompt"] == obj["prompt"]
    assert body["description"] == "Makes cats"
    (panel,) = body["params"]
    for key, value in obj["params"][0].items():
        assert panel[key] == value
    assert panel["name"] == "6.text"
    assert panel["default"] == "a cat"


def test_describe_leaves_out_links_as_defaults() -> None:
    obj = app_object(params=[{"type": "string", "id": "6", "key": "clip", "title": "x"}])
    (app,), _ = parse(obj)
    assert "default" not in app.describe()["params"][0]


def test_meta_edit_panels_default_to_their_node() -> None:
    prompt = workflow()
    prompt["3"]["_meta"] = {
        "title": "Sampler",
        "edit": [
            {"type": "number", "key": "steps", "title": "Steps", "min": 1, "max": 50},
            {"type": "number", "id": "6", "key": "seed_other", "title": "elsewhere"},
            {
                "type": "group",
                "title": "More",
                "children": [{"type": "number", "key": "cfg", "title": "CFG", "step": 0.5}],
            },
        ],
    }
    (app,), problems = parse(app_object(prompt=prompt))
    assert problems == []
    assert list(app.parameters) == ["6.text", "3.steps", "6.seed_other", "3.cfg"]
    group = app.describe()["params"][3]
    assert group["type"] == "group"
    assert "name" not in group
    assert group["children"][0]["name"] == "3.cfg"


def test_meta_edit_must_be_a_list() -> None:
    prompt = workflow()
    prompt["3"]["_meta"] = {"edit": {"type": "number"}}
    _, problems = parse(app_object(prompt=prompt))
    assert "_meta.edit must be a list" in problems[0].message


def test_bad_meta_edit_entry_names_its_node_and_index() -> None:
    prompt = workflow()
    prompt["3"]["_meta"] = {"edit": [{"type": "slider", "key": "steps"}]}
    _, problems = parse(app_object(prompt=prompt))
    assert "node 3 _meta.edit[0]" in problems[0].message


@pytest.mark.parametrize(
    ("panel", "reason"),
    [
        ({"type": "string", "key": "text", "title": "x"}, "has no id"),
        ({"type": "string", "id": "99", "key": "text"}, "no node 99"),
        ({"type": "string", "id": "6"}, "needs a key"),
        ({"type": "select", "id": "6", "key": "text"}, "needs options"),
        ({"type": "select", "id": "6", "key": "text", "options": ""}, "must not be empty"),
        ({"type": "number", "id": "3", "key": "steps", "min": 5, "max": 1}, "greater than max"),
        ({"type": "number", "id": "3", "key": "steps", "step": 0}, "step must be"),
        ({"type": "group", "title": "g"}, "needs children"),
        ({"type": "string", "id": "6", "key": "text", "children": []}, "cannot have children"),
        ({"type": "video", "id": "6", "key": "text"}, "type"),
    ],
)
def test_bad_panels_are_refused_with_a_reason(panel: dict[str, Any], reason: str) -> None:
    with pytest.raises(AppDefinitionError, match=reason):
        build_app(app_object(params=[panel]), "x")


def test_a_parameter_declared_twice_is_refused() -> None:
    params = [
        {"type": "string", "id": "6", "key": "text"},
        {"type": "group", "title": "g", "children": [{"type": "string", "id": 6, "key": "text"}]},
    ]
    with pytest.raises(AppDefinitionError, match="declared twice"):
        build_app(app_object(params=params), "x")


def test_a_bad_prompt_is_refused() -> None:
    with pytest.raises(AppDefinitionError, match="class_type"):
        build_app(app_object(prompt={"1": {"inputs": {}}}), "x")


def test_numeric_node_ids_and_comma_options_are_normalised() -> None:
    panel = Panel.model_validate(
        {"type": "select", "id": 3, "key": "sampler", "options": " euler, dpmpp_2m ,,ddim"}
    )
    assert panel.id == "3"
    assert panel.options == ["euler", "dpmpp_2m", "ddim"]
    assert panel.name == "3.sampler"


def test_group_leaves_flatten_nested_groups() -> None:
    panel = Panel.model_validate(
        {
            "type": "group",
            "title": "a",
            "children": [
                {"type": "string", "id": "1", "key": "x"},
                {
                    "type": "group",
                    "title": "b",
                    "children": [{"type": "image", "id": "2", "key": "y"}],
                },
            ],
        }
    )
    assert [leaf.name for leaf in panel.leaves()] == ["1.x", "2.y"]


@settings(deadline=None)  # pure and fast; a loaded machine may stall it
@given(st.lists(st.text(alphabet=" ,abc12", max_size=6), max_size=6))
def test_comma_options_never_hold_blank_entries(parts: list[str]) -> None:
    text = ",".join(parts)
    if not text.replace(",", "").strip():
        return  # nothing but separators: refused as empty
    panel = Panel.model_validate({"type": "select", "id": "1", "key": "k", "options": text})
    assert panel.options
    assert all(isinstance(o, str) and o == o.strip() and o for o in panel.options)


def test_the_readme_example_app_is_valid() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("## Apps") :]
    start = section.index("```json") + len("```json")
    document = json.loads(section[start : section.index("```", start)])
    app = build_app(document, "readme")
    assert app.id == "portrait"
    assert app.parameters["3.cfg"].step == 0.5  # from _meta.edit
    assert app.parameters["5.batch_size"].hidden

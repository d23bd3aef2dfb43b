"""Pure validation of app parameter values and their substitution into the app's workflow.

Values may come from JSON clients (numbers as numbers) or from forms (everything text), so
a number parameter accepts `"12"` as well as `12`. Anything unknown, hidden or ill-typed is
refused with every problem named by its parameter (`"6.text"`); nothing is half-applied.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent.apps.panels import App, Option, Panel
from agent.inputs import InputValueError, content_name, plan_image_value


class ParamError(ValueError):
    """Parameter values an app cannot run with: (parameter name, reason) for each."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"parameter {name}: {reason}" for name, reason in problems))

    @property
    def param(self) -> str:
        """The first parameter at fault."""
        return self.problems[0][0]

    def detail(self) -> dict[str, Any]:
        """The API error's `error` object."""
        node_id = self.param.partition(".")[0]
        return {
            "type": "param_error",
            "message": str(self),
            "param": self.param,
            "node_id": node_id,
            "details": {"errors": [{"param": n, "reason": r} for n, r in self.problems]},
        }


@dataclass(frozen=True)
class AppCall:
    """An app's workflow with parameters applied, and the parameters as the task keeps them."""

    workflow: dict[str, dict[str, Any]]
    # Values as applied (numbers parsed); inline images as the content-addressed name the
    # upload gets, so a task record never holds megabytes of base64.
    params: dict[str, Any]


def apply_params(app: App, values: Mapping[str, Any], *, max_image_bytes: int) -> AppCall:
    """The app's workflow (a copy) with values set; raises ParamError, changing nothing."""
    problems: list[tuple[str, str]] = []
    accepted: list[tuple[Panel, Any]] = []
    for name, value in values.items():
        panel = app.parameters.get(name)
        if panel is None:
            known = ", ".join(n for n, p in app.parameters.items() if not p.hidden) or "none"
            problems.append((name, f"unknown parameter (this app's parameters: {known})"))
            continue
        if panel.hidden:
            problems.append((name, "hidden: the app sets it, callers cannot"))
            continue
        try:
            current = app.current_value(panel)
            accepted.append((panel, coerce_value(panel, value, current, max_image_bytes)))
        except ValueError as exc:
            problems.append((name, str(exc)))
    if problems:
        raise ParamError(problems)
    workflow = copy.deepcopy(app.prompt)
    recorded: dict[str, Any] = {}
    for panel, value in accepted:
        node = workflow[panel.id or ""]
        inputs = node.get("inputs")
        if not isinstance(inputs, dict):
            inputs = node["inputs"] = {}
        inputs[panel.key] = value
        recorded[panel.name] = _recorded(panel, value, max_image_bytes)
    return AppCall(workflow, recorded)


def _recorded(panel: Panel, value: Any, max_image_bytes: int) -> Any:
    if panel.type != "image" or panel.options:
        return value
    item = plan_image_value(value, max_image_bytes)  # checked already: cannot fail here
    if item is None or item.data is None or item.extension is None:
        return value  # a file name or a URL: short, and what the caller sent
    return content_name(item.data, item.extension)


def coerce_value(panel: Panel, value: Any, current: Any, max_image_bytes: int) -> Any:
    """The value to put into the workflow for panel; ValueError says why it cannot be."""
    if panel.type == "string":
        return _text(value)
    if panel.type == "number":
        return _number(panel, value, current)
    if panel.type == "select":
        return _select(panel, value, current)
    if panel.type == "image":
        return _image(panel, value, max_image_bytes)
    raise ValueError(f"a {panel.type} panel takes no value")


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if _is_number(value):
        return str(value)  # `--set 6.text=42` arrives as a JSON number
    raise ValueError(f"must be text, not {_kind(value)}")


def _number(panel: Panel, value: Any, current: Any) -> int | float:
    number = _parse_number(value)
    if panel.min is not None and number < panel.min:
        raise ValueError(f"{_show(number)} is less than the minimum {_show(panel.min)}")
    if panel.max is not None and number > panel.max:
        raise ValueError(f"{_show(number)} is more than the maximum {_show(panel.max)}")
    if panel.step is not None and not _on_step(number, panel.min or 0, panel.step):
        base = f" from {_show(panel.min)}" if panel.min else ""
        raise ValueError(f"{_show(number)} is not a multiple of the step {_show(panel.step)}{base}")
    # The input keeps its kind: a FLOAT input given "7" gets 7.0, an INT one given 3.0 gets 3.
    if isinstance(current, float):
        return float(number)
    integral_step = panel.step is None or float(panel.step).is_integer()
    if isinstance(number, float) and number.is_integer() and integral_step:
        return int(number)
    return number


def _parse_number(value: Any) -> int | float:
    if _is_number(value):
        number: int | float = value
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            raise ValueError("must be a number, not empty text")
        try:
            number = int(text)  # exact for big seeds, which a float would round
        except ValueError:
            try:
                number = float(text)
            except ValueError:
                raise ValueError(f"must be a number, not {value!r}") from None
    else:
        raise ValueError(f"must be a number, not {_kind(value)}")
    if isinstance(number, float) and not math.isfinite(number):
        raise ValueError("must be a finite number")
    return number


def _on_step(number: int | float, base: int | float, step: int | float) -> bool:
    if all(isinstance(x, int) for x in (number, base, step)):
        return (number - base) % step == 0
    steps = (number - base) / step
    return abs(steps - round(steps)) <= 1e-9 * max(1.0, abs(steps))


def _select(panel: Panel, value: Any, current: Any) -> Option:
    options = panel.options or []
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        for option in options:
            if _same_option(option, value):
                return _option_value(option, current)
    shown = ", ".join(str(option) for option in options)
    raise ValueError(f"{value!r} is not one of the options ({shown})")


def _same_option(option: Option, value: str | int | float) -> bool:
    if isinstance(value, str):
        # A form sends every choice as text: "2" picks the option 2.
        return value == str(option) or value.strip() == str(option).strip()
    if isinstance(option, str):
        return False
    return option == value


def _option_value(option: Option, current: Any) -> Option:
    """A numeric-looking text option (from "512,768") is a number when the input is one."""
    if isinstance(option, str) and _is_number(current):
        try:
            return _parse_number(option)
        except ValueError:
            return option
    return option


def _image(panel: Panel, value: Any, max_image_bytes: int) -> str:
    if not isinstance(value, str) or not value.strip():
        forms = "file name, URL, data: URI or base64"
        raise ValueError(f"must be an image ({forms}), not {_kind(value)}")
    if panel.options:
        if value not in [str(option) for option in panel.options]:
            raise ValueError("must be one of the app's images (options)")
        return value
    try:
        plan_image_value(value, max_image_bytes)
    except InputValueError as exc:
        raise ValueError(exc.reason) from None
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _show(number: int | float) -> str:
    return f"{number:g}" if isinstance(number, float) else str(number)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "empty text" if not value.strip() else "text"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__

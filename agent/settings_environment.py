"""*Pure*: which environment variables set which settings, and what they set."""

from __future__ import annotations

from collections.abc import Container, Mapping

from pydantic import AliasChoices
from pydantic.fields import FieldInfo

PREFIX = "AGENT_"


def env_names(name: str, field: FieldInfo) -> tuple[str, ...]:
    """The variables of a setting, the first one set wins: its aliases, else AGENT_<NAME>."""
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return tuple(choice for choice in alias.choices if isinstance(choice, str))
    return (f"{PREFIX}{name.upper()}",)


def environment_values(
    fields: Mapping[str, FieldInfo], environ: Mapping[str, str], skip: Container[str] = ()
) -> dict[str, str]:
    """The values environ gives the settings in fields but those in skip, keyed for the model.

    An aliased setting is keyed by its variable (so a validation error names the variable
    that was wrong), any other by its name.
    """
    # Names match case-insensitively, as they always have (agent_port works like AGENT_PORT).
    lowered = {key.lower(): value for key, value in environ.items()}
    values: dict[str, str] = {}
    for name, field in fields.items():
        found = [env for env in env_names(name, field) if env.lower() in lowered]
        if name in skip or not found:
            continue
        key = found[0] if field.validation_alias is not None else name
        values[key] = lowered[found[0].lower()]
    return values

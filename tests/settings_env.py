"""The environment variable names the agent's settings read (for deployment file checks)."""

from __future__ import annotations

from pydantic import AliasChoices

from agent.settings import AgentSettings


def setting_env_names() -> set[str]:
    """Every name AgentSettings takes from the environment: AGENT_<FIELD>, or its aliases."""
    prefix = AgentSettings.model_config.get("env_prefix", "")
    names: set[str] = set()
    for name, field in AgentSettings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(choice for choice in alias.choices if isinstance(choice, str))
        elif isinstance(alias, str):
            names.add(alias)
        else:
            names.add(f"{prefix}{name}".upper())
    return names

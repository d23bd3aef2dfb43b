"""The environment variable names the agent's settings read (for deployment file checks)."""

from __future__ import annotations

from agent.settings import AgentSettings
from agent.settings_environment import env_names


def setting_env_names() -> set[str]:
    """Every name AgentSettings takes from the environment: AGENT_<FIELD>, or its aliases."""
    fields = AgentSettings.model_fields
    return {env for name, field in fields.items() for env in env_names(name, field)}

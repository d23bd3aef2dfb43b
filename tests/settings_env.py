"""The environment variable names the agent's settings read (for deployment file checks)."""

from __future__ import annotations

from agent.settings import AgentSettings, env_names


def setting_env_names() -> set[str]:
    """Every name AgentSettings takes from the environment: AGENT_<FIELD>, or its aliases."""
    return {env for name in AgentSettings.model_fields for env in env_names(name)}

"""Which environment variables set which settings: names, aliases, case, flags first."""

from __future__ import annotations

from pydantic import AliasChoices, BaseModel, Field

from agent.settings_environment import env_names, environment_values


class Sample(BaseModel):
    port: int = 0
    comfyui_dir: str = Field("", validation_alias=AliasChoices("COMFYUI_DIR", "AGENT_COMFYUI_DIR"))


FIELDS = Sample.model_fields


def test_names_are_agent_prefixed_unless_aliased() -> None:
    assert env_names("port", FIELDS["port"]) == ("AGENT_PORT",)
    assert env_names("comfyui_dir", FIELDS["comfyui_dir"]) == ("COMFYUI_DIR", "AGENT_COMFYUI_DIR")


def test_values_are_keyed_by_name_or_by_the_alias_found() -> None:
    environ = {"AGENT_PORT": "1", "AGENT_COMFYUI_DIR": "/c", "PATH": "/bin"}
    assert environment_values(FIELDS, environ) == {"port": "1", "AGENT_COMFYUI_DIR": "/c"}
    # The first alias wins over the later ones.
    environ["COMFYUI_DIR"] = "/b"
    assert environment_values(FIELDS, environ)["COMFYUI_DIR"] == "/b"
    assert "AGENT_COMFYUI_DIR" not in environment_values(FIELDS, environ)


def test_names_match_whatever_their_case() -> None:
    environ = {"agent_port": "2", "ComfyUI_Dir": "/d"}
    assert environment_values(FIELDS, environ) == {"port": "2", "COMFYUI_DIR": "/d"}


def test_skipped_settings_are_left_out() -> None:
    environ = {"AGENT_PORT": "1", "COMFYUI_DIR": "/b"}
    assert environment_values(FIELDS, environ, skip={"port", "comfyui_dir"}) == {}
    assert environment_values(FIELDS, {}) == {}


def test_the_validated_model_takes_the_keys() -> None:
    environ = {"AGENT_PORT": "3", "COMFYUI_DIR": "/b"}
    assert Sample.model_validate(environment_values(FIELDS, environ)) == Sample(
        port=3, COMFYUI_DIR="/b"
    )

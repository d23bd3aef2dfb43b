"""Settings: flags over the environment over defaults, list splitting, error messages."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from agent.settings import AgentSettings, parse_settings, settings_error_message


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No setting of the machine running the tests leaks in."""
    for name in list(os.environ):
        if name.upper().startswith(("AGENT_", "COMFYUI_")):
            monkeypatch.delenv(name)


def error_of(argv: list[str]) -> str:
    with pytest.raises(ValidationError) as caught:
        parse_settings(argv)
    return settings_error_message(caught.value)


def test_defaults() -> None:
    settings = parse_settings([])
    assert settings.port == 9000 and settings.host == "0.0.0.0"
    assert settings.comfyui_dir is None and settings.comfyui_args == [] and settings.command == []
    assert settings.image_inputs == ["LoadImage.image", "LoadImageMask.image"]
    assert settings.log_level == "INFO" and settings.output_store_optional is False
    assert settings.comfyui_base_url == "http://127.0.0.1:9001"


def test_environment_over_defaults_and_flags_over_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AGENT_PORT", "2")
    monkeypatch.setenv("AGENT_LOG_LEVEL", "debug")
    assert parse_settings([]).port == 2
    assert parse_settings([]).log_level == "DEBUG"
    assert parse_settings(["--port", "1"]).port == 1


def test_environment_names_are_matched_case_insensitively(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("agent_port", "3")
    monkeypatch.setenv("comfyui_dir", "/d")
    settings = parse_settings([])
    assert settings.port == 3 and settings.comfyui_dir == Path("/d")


def test_comfyui_dir_and_args_aliases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_COMFYUI_DIR", "/c")
    monkeypatch.setenv("AGENT_COMFYUI_ARGS", "--z")
    settings = parse_settings([])
    assert settings.comfyui_dir == Path("/c") and settings.comfyui_args == ["--z"]
    # The short names win over the AGENT_ ones, the flags over both.
    monkeypatch.setenv("COMFYUI_DIR", "/b")
    monkeypatch.setenv("COMFYUI_ARGS", "--a 'b c'")
    settings = parse_settings([])
    assert settings.comfyui_dir == Path("/b") and settings.comfyui_args == ["--a", "b c"]
    settings = parse_settings(["--comfyui-dir", "/a", "--comfyui-args=--x"])
    assert settings.comfyui_dir == Path("/a") and settings.comfyui_args == ["--x"]


def test_lists_are_split_on_commas(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_CORS_ORIGINS", "http://a, http://b,,")
    monkeypatch.setenv("AGENT_URL_FETCH_ALLOW", '["x"]')  # not JSON: one item as written
    settings = parse_settings(["--image-inputs", "A.image, B.picture"])
    assert settings.cors_origins == ["http://a", "http://b"]
    assert settings.url_fetch_allow == ['["x"]']
    assert settings.image_inputs == ["A.image", "B.picture"]


def test_command_from_the_environment_is_a_json_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_COMMAND", '["python", "main.py"]')
    assert parse_settings([]).command == ["python", "main.py"]
    assert parse_settings(["--", "run", "it"]).command == ["run", "it"]
    monkeypatch.setenv("AGENT_COMMAND", "python main.py")
    assert error_of([]) == "--command: Value error, AGENT_COMMAND must be a JSON list of strings"


def test_booleans(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_settings(["--output-store-optional"]).output_store_optional is True
    monkeypatch.setenv("AGENT_OUTPUT_STORE_OPTIONAL", "yes")
    assert parse_settings([]).output_store_optional is True
    monkeypatch.setenv("AGENT_OUTPUT_STORE_OPTIONAL", "maybe")
    assert error_of([]) == (
        "--output-store-optional: Input should be a valid boolean, unable to interpret input"
    )


def test_empty_values_mean_not_set(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AGENT_APPS", "AGENT_WEBHOOK", "AGENT_WARMUP", "AGENT_COMFYUI_OUTPUT_DIR"):
        monkeypatch.setenv(name, "")
    settings = parse_settings([])
    assert settings.apps is None and settings.webhook is None
    assert settings.warmup is None and settings.comfyui_output_dir is None


def test_unknown_environment_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_SETTINGS", "x")
    monkeypatch.setenv("AGENT_MODEL_CONFIG", "x")
    monkeypatch.setenv("AGENT_INSTANCE", "me")
    assert parse_settings([]).instance == "me"


def test_error_messages_name_the_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    integer = "Input should be a valid integer, unable to parse string as an integer"
    assert error_of(["--port", "x"]) == f"--port: {integer}"
    monkeypatch.setenv("AGENT_PORT", "")
    assert error_of([]) == f"--port: {integer}"
    monkeypatch.setenv("AGENT_PORT", "x")
    assert error_of([]) == f"--port: {integer}"
    monkeypatch.delenv("AGENT_PORT")
    monkeypatch.setenv("AGENT_TASK_TTL", "-1")
    monkeypatch.setenv("AGENT_MAX_BODY", "1")
    assert error_of([]) == (
        "--task-ttl: Input should be greater than or equal to 0\n"
        "--max-body: Input should be greater than or equal to 1024"
    )
    monkeypatch.delenv("AGENT_TASK_TTL")
    monkeypatch.delenv("AGENT_MAX_BODY")
    assert error_of(["--proxy", "some"]) == "--proxy: Input should be 'all', 'readonly' or 'none'"
    assert error_of(["--image-inputs", "bad"]) == (
        "--image-inputs: Value error, image input 'bad' must look like ClassType.input_name"
    )
    assert error_of(["--output-store", "ftp://x"]) == (
        "--output-store: Value error, unknown output store 'ftp://x'; known kinds: s3://"
    )


def test_an_environment_alias_error_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMFYUI_ARGS", "--a 'b c")
    assert error_of([]) == "--COMFYUI-ARGS: Value error, No closing quotation"


def test_settings_from_a_mapping_read_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_PORT", "2")
    settings = AgentSettings.model_validate({"port": "5", "comfyui_args": "--a b"})
    assert settings.port == 5 and settings.comfyui_args == ["--a", "b"]

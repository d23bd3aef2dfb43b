"""Agent settings: command-line flags over environment variables over defaults."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator

from agent.inputs import DEFAULT_IMAGE_INPUTS, parse_input_specs
from agent.settings_environment import env_names, environment_values

COMFYUI_RELEASE = "v0.3.64"
COMFYUI_REPOSITORY = "https://github.com/Comfy-Org/ComfyUI.git"


def _default_store() -> str:
    # Function Compute mounts NAS under /mnt/auto: share task state there when present.
    if Path("/mnt/auto").is_dir():
        return "file:///mnt/auto/comfyui/tasks"
    return "file://./data/tasks"


def _default_apps() -> Path | None:
    # Apps on the NAS are served by every instance that mounts it.
    shared = Path("/mnt/auto/comfyui/apps")
    return shared if shared.is_dir() else None


def _default_instance() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class AgentSettings(BaseModel):
    """Every knob of the agent; each has an env var (AGENT_<NAME> unless noted).

    The model reads no environment itself: `parse_settings` puts flags over it.
    """

    # Defaults are validated too (the apps directory, the image inputs, the log level).
    model_config = ConfigDict(extra="ignore", populate_by_name=True, validate_default=True)

    host: str = Field("0.0.0.0", description="address to listen on")
    port: int = Field(9000, ge=0, le=65535, description="port to listen on (FC's default)")
    comfyui_port: int = Field(9001, ge=1, le=65535, description="port of the ComfyUI child")
    comfyui_url: str | None = Field(
        None, description="attach to this running ComfyUI instead of starting a child"
    )
    comfyui_dir: Path | None = Field(
        None,
        validation_alias=AliasChoices("COMFYUI_DIR", "AGENT_COMFYUI_DIR"),
        description="ComfyUI checkout to start (env COMFYUI_DIR)",
    )
    comfyui_python: str | None = Field(
        None, description="interpreter for ComfyUI's main.py (default: this one)"
    )
    comfyui_args: list[str] = Field(
        default_factory=list,
        validation_alias=AliasChoices("COMFYUI_ARGS", "AGENT_COMFYUI_ARGS"),
        description="extra ComfyUI arguments, shell-quoted (env COMFYUI_ARGS)",
    )
    command: list[str] = Field(
        default_factory=list, description="child command after `--`, verbatim"
    )
    bootstrap_dir: Path = Field(
        Path.home() / ".cache" / "comfyui-agent",
        description="where ComfyUI is fetched when nothing else says where it is",
    )
    bootstrap_repository: str = Field(COMFYUI_REPOSITORY, description="ComfyUI git repository")
    bootstrap_ref: str = Field(COMFYUI_RELEASE, description="ComfyUI release tag to fetch")
    bootstrap_torch: str = Field(
        "auto", description="torch install for a fetched ComfyUI: auto|cpu|cuda|skip"
    )
    store: str = Field(
        default_factory=_default_store, description="file:///dir | redis://host:6379/0 | memory://"
    )
    task_ttl: float = Field(7 * 24 * 3600, ge=0, description="seconds a finished task is kept")
    task_lease: float = Field(
        30.0, gt=0, description="seconds without renewal after which a running task is lost"
    )
    lost_grace: float = Field(
        60.0,
        ge=0,
        description="seconds a watcher of a lost task keeps watching (its owner may come back)",
    )
    token: str = Field("", repr=False, description="bearer token for /api/* (empty: no auth)")
    cors_origins: list[str] = Field(
        default_factory=list, description="comma-separated allowed CORS origins"
    )
    proxy: Literal["all", "readonly", "none"] = Field(
        "all", description="pass-through of other paths to ComfyUI"
    )
    max_body: int = Field(64 * 1024 * 1024, ge=1024, description="largest request body, bytes")
    url_fetch_allow: list[str] = Field(
        default_factory=list, description="hosts/CIDRs image URLs may reach despite the block"
    )
    max_input_bytes: int = Field(32 * 1024 * 1024, ge=1, description="largest input image")
    url_fetch_timeout: float = Field(30.0, gt=0, description="seconds to fetch an image URL")
    image_inputs: list[str] = Field(
        default_factory=lambda: list(DEFAULT_IMAGE_INPUTS),
        description="comma-separated ClassType.input names that take images",
    )
    results: Literal["base64", "none"] = Field(
        "base64", description="inline output files in sync answers"
    )
    max_queue: int = Field(0, ge=0, description="tasks queued+running here (0: unlimited)")
    run_timeout: float = Field(3600.0, gt=0, description="seconds a run may take in all")
    ready_timeout: float = Field(
        120.0, ge=0, description="seconds a request waits for ComfyUI to become ready"
    )
    store_flush_interval: float = Field(
        0.25, ge=0, description="at most this long between progress writes"
    )
    shutdown_grace: float = Field(30.0, ge=0, description="seconds running tasks get at SIGTERM")
    comfyui_hang_timeout: float = Field(
        60.0, gt=0, description="restart a ComfyUI child that stops answering for this long"
    )
    ws_first_message_timeout: float = Field(
        60.0, gt=0, description="seconds a /api/run/ws client has to send its workflow"
    )
    apps: Path | None = Field(
        default_factory=_default_apps,
        description="directory of app files (*.json), re-read on change"
        " (default /mnt/auto/comfyui/apps when it exists)",
    )
    output_store: str | None = Field(
        None, description="upload outputs to s3://BUCKET/PREFIX?endpoint=URL&region=R"
    )
    output_store_optional: bool = Field(
        False, description="a failed upload is logged, not a failed task"
    )
    output_store_presign: float = Field(
        0, ge=0, le=7 * 24 * 3600, description="urls are presigned for this many s (0: s3://)"
    )
    upload_concurrency: int = Field(4, ge=1, le=64, description="output files uploaded at once")
    comfyui_output_dir: Path | None = Field(
        None,
        description="ComfyUI's output directory, read directly for uploads and sync answers"
        " (else /view)",
    )
    webhook: str | None = Field(None, description="POST task.succeeded/failed/interrupted here")
    webhook_secret: str = Field(
        "", repr=False, description="whsec_... secret that signs webhooks (Standard Webhooks)"
    )
    webhook_attempts: int = Field(5, ge=1, le=20, description="tries per webhook event")
    webhook_timeout: float = Field(10.0, gt=0, description="seconds one webhook POST may take")
    warmup: Path | None = Field(
        None,
        description="workflow JSON file, or an app id, run once before /readyz and /initialize"
        " say ready",
    )
    warmup_timeout: float = Field(
        600.0, gt=0, description="seconds the warm-up may take before readiness goes on"
    )
    instance: str = Field(default_factory=_default_instance, description="this instance's name")
    log_format: Literal["text", "json"] = Field("text", description="log line format")
    log_level: str = Field("INFO", description="log level")

    @field_validator("comfyui_args", mode="before")
    @classmethod
    def _split_args(cls, value: Any) -> Any:
        return shlex.split(value) if isinstance(value, str) else value

    @field_validator("command", mode="before")
    @classmethod
    def _json_command(cls, value: Any) -> Any:
        # AGENT_COMMAND is a JSON list; the flags give the command after `--` as a list.
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                raise ValueError("AGENT_COMMAND must be a JSON list of strings") from None
        return value

    @field_validator("cors_origins", "url_fetch_allow", "image_inputs", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("image_inputs")
    @classmethod
    def _check_image_inputs(cls, value: list[str]) -> list[str]:
        parse_input_specs(value)
        return value

    @field_validator("apps", mode="before")
    @classmethod
    def _no_apps(cls, value: Any) -> Any:
        # AGENT_APPS= (empty) turns apps off rather than meaning the current directory.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("webhook", "warmup", "comfyui_output_dir", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        # Deployment templates set every variable, some to "": that means "not set".
        return None if value == "" else value

    @field_validator("output_store")
    @classmethod
    def _check_output_store(cls, value: str | None) -> str | None:
        if value:
            from agent.delivery.stores import open_output_store

            open_output_store(value, env={})  # raises with the reason when unusable
        return value or None

    @field_validator("webhook_secret")
    @classmethod
    def _check_webhook_secret(cls, value: str) -> str:
        if value:
            from standardwebhooks import Webhook

            try:
                Webhook(value)
            except Exception as exc:
                raise ValueError(
                    f"not a Standard Webhooks secret (whsec_<base64>): {exc}"
                ) from None
        return value

    @field_validator("log_level")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()

    @property
    def comfyui_base_url(self) -> str:
        """Where ComfyUI answers: the attach URL or the child's loopback port."""
        if self.comfyui_url:
            return self.comfyui_url.rstrip("/")
        return f"http://127.0.0.1:{self.comfyui_port}"


def build_parser() -> argparse.ArgumentParser:
    """The command line: one flag per setting, defaults shown."""
    parser = argparse.ArgumentParser(
        prog="comfyui-agent",
        description="Run ComfyUI workflows over HTTP/websocket with shared task progress.",
        epilog="Child command: `comfyui-agent [OPTIONS] -- python /comfyui/main.py --port 9001`. "
        "Client: `comfyui-agent run|watch|apps --help`.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        # `--url` must not silently mean --url-fetch-allow: no prefix guessing.
        allow_abbrev=False,
    )
    defaults = AgentSettings.model_construct()
    for name, field in AgentSettings.model_fields.items():
        if name == "command":
            continue
        flag = "--" + name.replace("_", "-")
        env = env_names(name, field)[0]
        default = getattr(defaults, name, None) if field.default_factory is None else None
        if name == "store":
            default = _default_store()
        shown = "" if name in ("token", "webhook_secret") else default
        if field.annotation is bool:
            parser.add_argument(
                flag,
                dest=name,
                action="store_const",
                const="true",
                default=argparse.SUPPRESS,
                help=f"{field.description} [env {env}=true]",
            )
            continue
        parser.add_argument(
            flag,
            dest=name,
            default=argparse.SUPPRESS,
            help=f"{field.description} [env {env}] (default: {shown})",
            metavar=name.split("_")[-1].upper(),
        )
    return parser


def parse_settings(argv: Sequence[str]) -> AgentSettings:
    """Settings from argv (flags, then `-- COMMAND ...`) over the environment."""
    args = list(argv)
    command: list[str] = []
    if "--" in args:
        index = args.index("--")
        args, command = args[:index], args[index + 1 :]
    flags: dict[str, Any] = dict(vars(build_parser().parse_args(args)))
    if command:
        flags["command"] = command
    # A flag hides its setting's variable: an alias key would win over the name in the model.
    values: dict[str, Any] = environment_values(AgentSettings.model_fields, os.environ, flags)
    return AgentSettings.model_validate({**values, **flags})


def settings_error_message(exc: ValidationError) -> str:
    """A one-line-per-problem explanation of invalid settings."""
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        lines.append(f"--{where.replace('_', '-')}: {error['msg']}")
    return "\n".join(lines)

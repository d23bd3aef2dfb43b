"""Static checks of the Dockerfile and its constraints file (no Docker needed).

What a reviewer would check by eye, made exact: the image runs unprivileged with ComfyUI's
writable folders owned by its user, every pip install is held to constraints.txt (which pins
every package, the agent's dependencies at versions pyproject.toml allows), OCI labels, and
a HEALTHCHECK on liveness (/healthz), not readiness.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from agent.settings import AgentSettings

ROOT = Path(__file__).resolve().parents[1]
COMFYUI_WRITABLE = ("models", "custom_nodes", "input", "output", "temp", "user")
OCI_LABELS = (
    "org.opencontainers.image.title",
    "org.opencontainers.image.description",
    "org.opencontainers.image.licenses",
    "org.opencontainers.image.version",
    "org.opencontainers.image.revision",
    "org.opencontainers.image.created",
    "org.opencontainers.image.base.name",
)


@dataclass
class Instruction:
    keyword: str
    args: str


def parse_dockerfile(text: str) -> list[list[Instruction]]:
    """Instructions per build stage (line continuations joined, comments dropped)."""
    stages: list[list[Instruction]] = [[]]
    logical = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not logical and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        keyword, _, args = logical.partition(" ")
        instruction = Instruction(keyword.upper(), args.strip())
        if instruction.keyword == "FROM":
            stages.append([])
        stages[-1].append(instruction)
        logical = ""
    return stages


@pytest.fixture(scope="module")
def final_stage() -> list[Instruction]:
    return parse_dockerfile((ROOT / "Dockerfile").read_text())[-1]


def build_args(stage: list[Instruction]) -> dict[str, str]:
    args = {}
    for instruction in stage:
        if instruction.keyword == "ARG" and "=" in instruction.args:
            name, _, value = instruction.args.partition("=")
            args[name] = value
    return args


def expand(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), text)


def constraints() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep and version and ";" not in line, f"not an exact pin: {line!r}"
        key = canonicalize_name(name)
        assert key not in pins, f"pinned twice: {name}"
        pins[key] = version
    return pins


def test_runs_as_an_unprivileged_user_owning_comfyuis_writable_folders(
    final_stage: list[Instruction],
) -> None:
    args = build_args(final_stage)
    users = [i.args for i in final_stage if i.keyword == "USER"]
    assert users, "no USER: the image would run as root"
    user = expand(users[-1], args).split(":")[0]
    assert user not in ("root", "0") and int(user) >= 1000
    runs = " ".join(expand(i.args, args) for i in final_stage if i.keyword == "RUN")
    runs = runs.replace('"', "")
    assert f"useradd --uid {user}" in runs
    chowns = [part for part in runs.split("&&") if "chown" in part]
    owned = " ".join(chowns)
    assert f"{user}:" in owned
    for folder in COMFYUI_WRITABLE:
        assert f"/comfyui/{folder}" in owned, f"/comfyui/{folder} not owned by the user"
    # The entrypoint replaces those folders with NAS links: it needs /comfyui itself.
    assert any(shlex.split(part)[-1] == "/comfyui" for part in chowns)
    # The USER comes after everything that needs root.
    last_user = max(n for n, i in enumerate(final_stage) if i.keyword == "USER")
    assert all(i.keyword != "RUN" for i in final_stage[last_user:])


def test_every_pip_install_is_held_to_the_constraints_file(
    final_stage: list[Instruction],
) -> None:
    env = " ".join(i.args for i in final_stage if i.keyword == "ENV")
    match = re.search(r"PIP_CONSTRAINT=(\S+)", env)
    assert match, "PIP_CONSTRAINT is not set"
    target = match.group(1)
    copies = [n for n, i in enumerate(final_stage) if i.keyword == "COPY" and target in i.args]
    assert copies and final_stage[copies[0]].args.split()[0] == "constraints.txt"
    installs = [
        n for n, i in enumerate(final_stage) if i.keyword == "RUN" and "pip install" in i.args
    ]
    assert installs and min(installs) > copies[0]
    for n in installs:
        assert "PIP_CONSTRAINT=" not in final_stage[n].args  # nothing unsets it


def test_constraints_pin_the_agent_and_comfyui_dependencies() -> None:
    pins = constraints()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    requirements = [Requirement(r) for r in project["project"]["dependencies"]]
    requirements += [Requirement(r) for r in project["build-system"]["requires"]]
    for requirement in requirements:
        key = canonicalize_name(requirement.name)
        assert key in pins, f"{requirement.name} is not pinned in constraints.txt"
        assert requirement.specifier.contains(pins[key], prereleases=True), (
            f"constraints.txt pins {requirement.name}=={pins[key]}, pyproject wants"
            f" {requirement.specifier}"
        )
    for name in ("torch", "torchvision", "torchaudio", "comfyui-frontend-package", "numpy"):
        assert name in pins, f"{name} (ComfyUI) is not pinned"


def test_oci_labels(final_stage: list[Instruction]) -> None:
    labels = " ".join(i.args for i in final_stage if i.keyword == "LABEL")
    found = dict(re.findall(r'([\w.-]+)="([^"]*)"', labels))
    for key in OCI_LABELS:
        assert found.get(key), f"label {key} missing or empty"


def test_healthcheck_is_liveness_on_the_agent_port(final_stage: list[Instruction]) -> None:
    checks = [i.args for i in final_stage if i.keyword == "HEALTHCHECK"]
    assert len(checks) == 1
    check = checks[0]
    # Restarting a container whose ComfyUI is still loading (/readyz 503) only restarts
    # the load: the container's health is the agent's liveness.
    assert "/healthz" in check and "/readyz" not in check
    for option in ("--interval=", "--timeout=", "--start-period=", "--retries="):
        assert option in check
    port = AgentSettings.model_fields["port"].default
    assert f"'{port}'" in check and "AGENT_PORT" in check
    exposed = [i.args for i in final_stage if i.keyword == "EXPOSE"]
    assert exposed == [str(port)]


def test_entrypoint_reaps_and_forwards_signals(final_stage: list[Instruction]) -> None:
    entrypoints = [i.args for i in final_stage if i.keyword == "ENTRYPOINT"]
    assert entrypoints and entrypoints[-1].startswith('["tini", "--"')

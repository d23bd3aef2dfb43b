"""deploy/fc/s.yaml checked against the fc3 component's schema (devsapp/fc3 0.1.22) and the agent.

The schema's facts used here (required props, enums, ranges) are restated below; the
deliberate departures (fc.gpu.ada.1, gpuMemorySize > 24576, the string nasConfig) are
documented in deploy/fc/README.md and allowed explicitly.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.delivery.s3 import CREDENTIAL_VARIABLES
from agent.settings import AgentSettings
from tests.settings_env import setting_env_names

ROOT = Path(__file__).resolve().parents[1]
FC = ROOT / "deploy" / "fc"

# fc3 0.1.22 src/schema.json: required for runtime custom-container.
REQUIRED_PROPS = ("region", "functionName", "runtime", "customContainerConfig")
SCHEMA_GPU_TYPES = {"fc.gpu.tesla.1", "fc.gpu.ampere.1"}
FC_API_ONLY_GPU_TYPES = {"fc.gpu.ada.1"}  # accepted by FC's API, not in the schema
RANGES: dict[str, tuple[float, float]] = {
    "cpu": (0.05, 16),
    "memorySize": (128, 32768),
    "instanceConcurrency": (1, 200),
    "timeout": (1, 86400),
}
ENV_CALL = re.compile(r"\$\{env\('([A-Z0-9_]+)',\s*'([^']*)'\)\}")
VAR_REF = re.compile(r"\$\{vars\.(\w+)\}")

Doc = dict[str, Any]


@pytest.fixture(scope="module")
def s_yaml() -> Doc:
    doc: Doc = yaml.safe_load((FC / "s.yaml").read_text())
    return doc


def resolve(value: Any, variables: dict[str, Any]) -> Any:
    """A value as `s` would see it with no environment set: env() defaults, vars filled in."""
    if not isinstance(value, str):
        return value
    value = ENV_CALL.sub(lambda m: m.group(2), value)
    whole = VAR_REF.fullmatch(value)
    if whole:
        return resolve(variables[whole.group(1)], variables)
    return VAR_REF.sub(lambda m: str(resolve(variables[m.group(1)], variables)), value)


@pytest.fixture(scope="module")
def props(s_yaml: Doc) -> Doc:
    function = s_yaml["resources"]["comfyui"]
    assert function["component"] == "fc3"
    raw: Doc = function["props"]
    return raw


def test_structure_and_required_props(s_yaml: Doc, props: Doc) -> None:
    assert s_yaml["edition"] == "3.0.0"
    assert set(s_yaml["resources"]) == {"comfyui", "domain"}
    assert s_yaml["resources"]["domain"]["component"] == "fc3-domain"
    for name in REQUIRED_PROPS:
        assert name in props, f"required prop {name} missing"
    assert props["runtime"] == "custom-container"
    assert props["customContainerConfig"]["port"] == AgentSettings.model_fields["port"].default
    route = s_yaml["resources"]["domain"]["props"]["routeConfig"]["routes"][0]
    assert route["functionName"] == "${resources.comfyui.props.functionName}"


def test_deploy_variables_stay_out_of_fcs_namespace(s_yaml: Doc) -> None:
    # fc3 reads FC_REGION to decide it runs inside FC (and then uses internal endpoints).
    names = ENV_CALL.findall((FC / "s.yaml").read_text())
    assert names, "no env() variables found"
    for name, _ in names:
        assert not name.startswith("FC_"), name
    readme = (FC / "README.md").read_text()
    assert "export FC_" not in readme
    for name, _ in names:
        assert f"`{name}`" in readme, f"{name} is not described in deploy/fc/README.md"


def test_values_within_the_components_schema(s_yaml: Doc, props: Doc) -> None:
    variables = s_yaml["vars"]
    for name, (low, high) in RANGES.items():
        assert low <= props[name] <= high, name
    assert props["memorySize"] % 64 == 0
    assert props["diskSize"] in (512, 10240)
    gpu = props["gpuConfig"]
    assert resolve(gpu["gpuType"], variables) in SCHEMA_GPU_TYPES
    memory = gpu["gpuMemorySize"]
    assert memory % 1024 == 0 and 1024 <= memory <= 24576
    # The type named in the comments beyond the schema is one FC's API has.
    mentioned = set(re.findall(r"fc\.gpu\.\w+\.\d", (FC / "s.yaml").read_text()))
    assert mentioned <= SCHEMA_GPU_TYPES | FC_API_ONLY_GPU_TYPES
    async_config = props["asyncInvokeConfig"]
    assert 0 <= async_config["maxAsyncRetryAttempts"] <= 8
    assert 1 <= async_config["maxAsyncEventAgeInSeconds"] <= 2592000
    for hook in props["instanceLifecycleConfig"].values():
        assert isinstance(hook["handler"], str) and hook["timeout"] >= 1
    # String nasConfig: parsed by the component (not in its schema), kept on purpose.
    nas = resolve(props["nasConfig"], variables)
    assert nas.startswith("auto|") and "mountDir=/mnt/auto" in nas.split("|")
    assert props["vpcConfig"] == "auto" and props["logConfig"] == "auto"


def test_environment_sets_only_real_agent_settings(s_yaml: Doc, props: Doc) -> None:
    env = props["environmentVariables"]
    # Output store credentials are read from the environment by the store, not settings.
    known = setting_env_names() | set(CREDENTIAL_VARIABLES)
    agent_vars = [name for name in env if name.startswith("AGENT_")]
    assert agent_vars
    for name in agent_vars:
        assert name in known, f"{name} is not a setting of the agent"
    variables = s_yaml["vars"]
    for name, value in env.items():
        # The schema's IKV: environment values are strings.
        assert isinstance(resolve(value, variables), str), name
    # Every value parses as the agent would parse it.
    resolved = {name: resolve(value, variables) for name, value in env.items()}
    settings = AgentSettings.model_validate(
        {name.removeprefix("AGENT_").lower(): value for name, value in resolved.items()}
    )
    assert settings.log_format == "json"


def test_timings_agree(s_yaml: Doc, props: Doc) -> None:
    variables = s_yaml["vars"]
    run_timeout = float(resolve(variables["runTimeout"], variables))
    ready_timeout = float(resolve(variables["readyTimeout"], variables))
    grace = float(resolve(variables["shutdownGrace"], variables))
    assert props["timeout"] >= run_timeout + 60
    hooks = props["instanceLifecycleConfig"]
    assert hooks["initializer"]["timeout"] >= ready_timeout
    assert hooks["preStop"]["timeout"] >= grace
    health = props["customContainerConfig"]["healthCheckConfig"]
    assert health["httpGetUrl"] == "/readyz"
    assert 0 <= health["initialDelaySeconds"] <= 120
    assert 1 <= health["timeoutSeconds"] <= 3

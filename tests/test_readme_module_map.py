"""The module map in README.md's Development section names every module, and only real ones."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("agent", "comfyui", "store")


def module_map() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Development", 1)[1]
    return section.split("\n## ", 1)[0]


def named_paths() -> set[str]:
    return set(re.findall(r"`((?:agent|comfyui|store)/[\w/]*(?:\.py)?)`", module_map()))


def test_every_module_is_in_the_map() -> None:
    named = named_paths()
    missing = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if path.name == "__init__.py":
                continue  # a package marker: its docstring says what the package is for
            # A package named with a trailing slash covers every module in it.
            covered = relative in named or any(
                name.endswith("/") and relative.startswith(name) for name in named
            )
            if not covered:
                missing.append(relative)
    assert not missing, f"modules missing from README's module map: {missing}"


def test_every_path_in_the_map_exists() -> None:
    for name in named_paths():
        assert (ROOT / name).exists(), f"README's module map names {name}, which does not exist"

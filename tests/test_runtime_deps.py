"""The runtime dependency set, as pyproject.toml declares it, is installed and imports here.

Checked on the interpreter the virtualenv uses, whatever its version: a
dependency that only some Pythons need (``tomli`` before 3.11, for the TOML
config) must be declared with its marker, or `bin/setup` on that Python
installs a product that cannot read its own configuration.
"""

from __future__ import annotations

import importlib
import importlib.metadata as metadata
import sys

import msgspec
import pytest
from packaging.requirements import Requirement

from services.common.paths import REPO_ROOT


def _runtime_requirements() -> list[Requirement]:
    project = msgspec.toml.decode((REPO_ROOT / "pyproject.toml").read_bytes())["project"]
    return [Requirement(text) for text in project["dependencies"]]


def _modules_of(distribution: str) -> list[str]:
    """Top-level import names a distribution provides (mlx-lm -> mlx_lm, pyzmq -> zmq)."""
    wanted = metadata.distribution(distribution).metadata["Name"].lower().replace("_", "-")
    names = [module for module, dists in metadata.packages_distributions().items()
             if any(d.lower().replace("_", "-") == wanted for d in dists) and not module.startswith("_")]
    return sorted(names)


def test_every_runtime_requirement_for_this_python_is_installed() -> None:
    applicable = [r for r in _runtime_requirements() if r.marker is None or r.marker.evaluate()]
    assert applicable, "pyproject.toml lists no runtime dependencies"
    for requirement in applicable:
        try:
            version = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            pytest.fail(f"{requirement} is a runtime dependency on Python {sys.version.split()[0]} "
                        "but is not installed: run bin/setup")
        assert requirement.specifier.contains(version, prereleases=True), f"{requirement.name} {version}"


@pytest.mark.parametrize("text", [str(r) for r in _runtime_requirements()])
def test_runtime_requirement_imports(text: str) -> None:
    requirement = Requirement(text)
    if requirement.marker is not None and not requirement.marker.evaluate():
        pytest.skip(f"not needed here ({requirement.marker}; this is Python {sys.version.split()[0]}, {sys.platform})")
    modules = _modules_of(requirement.name)
    assert modules, f"{requirement.name} provides no importable module"
    for module in modules:
        importlib.import_module(module)


def test_the_config_file_format_is_readable_on_this_python() -> None:
    """msgspec.toml needs tomllib (3.11+) or tomli: the shipped config must decode either way."""
    decoded = msgspec.toml.decode((REPO_ROOT / "etc" / "circadian.toml").read_bytes())
    assert "chat" in decoded

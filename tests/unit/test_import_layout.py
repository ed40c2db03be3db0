"""The package layout holds: shared is a leaf, ingress and workers never import each other,
and no other installed distribution claims our three import names."""

import ast
import importlib.metadata
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("shared", "ingress", "workers")
FORBIDDEN = {"shared": {"ingress", "workers"}, "ingress": {"workers"}, "workers": {"ingress"}}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", PACKAGES)
def test_import_direction(package: str) -> None:
    sources = sorted((ROOT / package).rglob("*.py"))
    assert sources, f"{package}/ has no modules"
    for source in sources:
        wrong = imported_packages(source) & FORBIDDEN[package]
        assert not wrong, f"{source.relative_to(ROOT)} imports {sorted(wrong)}"


def test_no_other_distribution_claims_our_import_names() -> None:
    owners: dict[str, set[str]] = {name: set() for name in PACKAGES}
    for dist in importlib.metadata.distributions():
        top_level = dist.read_text("top_level.txt") or ""
        for name in top_level.split():
            if name in owners:
                owners[name].add(dist.metadata["Name"])
        for file in dist.files or []:
            parts = file.parts
            if len(parts) > 1 and parts[0] in owners and parts[1] == "__init__.py":
                owners[parts[0]].add(dist.metadata["Name"])
    for name, claimed_by in owners.items():
        assert claimed_by <= {"mxfleet"}, f"import name {name!r} also installed by {claimed_by}"


def test_the_distribution_ships_exactly_our_packages() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert sorted(project["tool"]["setuptools"]["packages"]) == sorted(PACKAGES)
    assert project["project"]["scripts"] == {"mxfleet": "shared.cli:main"}

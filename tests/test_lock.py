"""requirements/lock.txt: exact versions for every dependency, and the environment `make setup` made from it."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==(\S+)")


def _lock() -> dict[str, str]:
    lines = (ROOT / "requirements/lock.txt").read_text(encoding="utf-8").splitlines()
    return {canonicalize_name(m[1]): m[2] for line in lines if (m := PIN.match(line))}


def _declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return [Requirement(r) for r in (*project["dependencies"], *project["optional-dependencies"]["dev"])]


def test_every_declared_dependency_is_locked_inside_its_range():
    lock = _lock()
    missing = [str(r) for r in _declared() if canonicalize_name(r.name) not in lock]
    assert missing == [], "run `make lock`"
    outside = [f"{r} locked at {lock[canonicalize_name(r.name)]}" for r in _declared()
               if not r.specifier.contains(Version(lock[canonicalize_name(r.name)]), prereleases=True)]
    assert outside == [], "run `make lock`"
    assert lock["torch"] == "2.13.0+cpu"


def test_the_environment_has_the_locked_versions():
    """`make setup` (hence `make run`, `make test` and .ci/run) installs from the lock: what runs is what it pins."""
    differing = {}
    for name, pinned in _lock().items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = None
        if installed is None or Version(installed) != Version(pinned):
            differing[name] = (pinned, installed)
    assert differing == {}

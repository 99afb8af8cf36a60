"""Names that explain themselves: within the package ``rare`` no two modules share a basename and no two
top-level classes share a name, so a name in a traceback, an import or a review points at one thing."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "rare"
# Mirrors by design: ``config/<section>.py`` is the params section that ``stages/<stage>.py`` (the stage of the
# same name) reads, so the pair shares its name on purpose; the package tells them apart in every import.
MIRRORED = {"config", "stages"}


def _modules() -> dict[str, list[str]]:
    found: dict[str, list[str]] = defaultdict(list)
    for path in sorted(SRC.rglob("*.py")):
        if path.stem not in ("__init__", "__main__"):
            found[path.stem].append(str(path.relative_to(SRC)))
    return found


def _classes() -> dict[str, list[str]]:
    found: dict[str, list[str]] = defaultdict(list)
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ClassDef):
                found[node.name].append(str(path.relative_to(SRC)))
    return found


def duplicated_modules() -> dict[str, list[str]]:
    """Basenames defined more than once, a config/stages mirror pair counting once."""
    dup = {}
    for name, paths in _modules().items():
        outside = [p for p in paths if p.split("/")[0] not in MIRRORED or p.count("/") != 1]
        mirrored = len(paths) - len(outside)
        if len(outside) + min(mirrored, 1) > 1:
            dup[name] = paths
    return dup


def test_no_two_modules_share_a_name() -> None:
    dup = duplicated_modules()
    assert not dup, dup


def test_no_two_classes_share_a_name() -> None:
    dup = {name: paths for name, paths in _classes().items() if len(paths) > 1}
    assert not dup, dup


def test_the_renamed_collisions_stay_gone() -> None:
    """The names issue 24 found blurred: one module or class each now."""
    modules, classes = _modules(), _classes()
    for name in ("pipeline", "services", "registry", "entry", "stage", "run"):
        assert len(modules.get(name, [])) <= 1, (name, modules[name])
    for name in ("TextModes", "Service", "Family", "Pair", "Source", "Item"):
        assert len(classes.get(name, [])) <= 1, (name, classes[name])


def test_no_two_stage_functions_share_a_name() -> None:
    """The functions the stages run, and the writers of their metrics, say what they run and write."""
    counts: dict[str, int] = defaultdict(int)
    for path in SRC.rglob("*.py"):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.FunctionDef):
                counts[node.name] += 1
    assert counts["run"] == 0 and counts["write_metrics"] == 0

"""The layering rule on the real import graph: library packages never import the plumbing above them."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "rare"
LIBRARY = ("data", "model", "train", "evaluate", "enhance", "report", "benchmark", "serve", "ingest", "pretrain")
PLUMBING = frozenset({"rare.mlflow_runs", "rare.stageflow", "rare.cli", "rare.stages"})
def imported(path: Path) -> set[str]:
    """Every module ``path`` names in an import statement, at any depth (lazy and type-only imports too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
    return found


def violations(packages: tuple[str, ...] = LIBRARY) -> set[tuple[str, str]]:
    """(file under src/rare, the plumbing module it imports) pairs."""
    return {(str(f.relative_to(SRC)), p) for pkg in packages for f in sorted((SRC / pkg).rglob("*.py"))
            for m in imported(f) for p in PLUMBING if m == p or m.startswith(p + ".")}


def test_library_packages_import_no_plumbing() -> None:
    """The stage modules (rare.stages.<stage>) hold the tracking and the Prefect wiring; the library none."""
    assert violations() == set()


def test_the_scan_sees_an_upward_import(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text("def g():\n    from rare.stages import Step\n    import rare.cli\n", encoding="utf-8")
    assert {"rare.stages", "rare.stages.Step", "rare.cli"} <= imported(f)


def test_config_and_the_report_table_read_nothing_above_them() -> None:
    """The op vocabulary lives in rare.config.ops; the report receives its row order (``--order``)."""
    assert not {m for f in (SRC / "config").glob("*.py") for m in imported(f) if m.startswith("rare.enhance")}
    assert not {m for m in imported(SRC / "report/table.py") if m.startswith("rare.stages")}

"""The stage registry: dvc.yaml is generated from it, each stage's deps cover the code it runs, the CLI
accepts every command line it declares, and the committed lock and checkpoint stay valid."""

from __future__ import annotations

import modulefinder
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from rare import stages
from rare.cli import app
from rare.data.views import VARIANTS

ROOT = stages.ROOT


def test_committed_dvc_yaml_is_the_generated_one() -> None:
    assert (ROOT / "dvc.yaml").read_text(encoding="utf-8") == stages.dvc_yaml(), "run `rare dvc-yaml`"


def _covered(path: Path, deps: list[str]) -> bool:
    rel = path.relative_to(ROOT)
    return any(rel == Path(d) or Path(d) in rel.parents for d in deps)


def _finder_closure(module: str) -> set[Path]:
    """Every module of rare and flows that ``module`` may import, lazily inside functions too, found by
    the standard library's bytecode scanner (not the registry's own walker)."""
    finder = modulefinder.ModuleFinder(path=[str(ROOT / "src"), str(ROOT)])
    finder.run_script(str(stages._module_file(module)))
    return {Path(m.__file__) for name, m in finder.modules.items()
            if m.__file__ and name.split(".")[0] in ("rare", "flows", "__main__")}


@pytest.fixture(scope="module")
def dispatch_closure() -> set[Path]:
    """What `rare <command>` imports before the stage's function runs: rare.cli and the stage wrapper,
    measured by importing them in a fresh interpreter."""
    code = ("import sys, rare.cli, rare.stageflow; print('\\n'.join(m.__file__ for n, m in list(sys.modules.items()) "
            "if n.split('.')[0] in ('rare', 'flows') and getattr(m, '__file__', None)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return {Path(line) for line in out.splitlines()} | _finder_closure("rare.stageflow")


@pytest.mark.parametrize("stage", list(stages.stages()), ids=lambda s: s.name)
def test_deps_cover_the_import_closure(stage: stages.Stage, dispatch_closure: set[Path]) -> None:
    """A change to any module a stage imports reruns it (mbeir.py, config/__init__.py, errors.py, ...)."""
    needed = _finder_closure(stage.step.module) | dispatch_closure
    assert ROOT / "src/rare/mbeir.py" in needed  # the scan found the headline cutoffs every stage imports
    missing = sorted(str(p.relative_to(ROOT)) for p in needed if not _covered(p, stage.deps))
    assert not missing, f"{stage.name} imports these without depending on them: {missing}"
    for must in ("src/rare/mbeir.py", "src/rare/errors.py", "src/rare/config/__init__.py", "src/rare/runtime.py"):
        assert _covered(ROOT / must, stage.deps), (stage.name, must)


def test_the_closure_walker_sees_lazy_imports(tmp_path: Path) -> None:
    """The generator's walker follows imports inside functions (the stages import torch & co. lazily)."""
    files = {str(p.relative_to(ROOT)) for p in stages.import_closure("rare.evaluate.entry")}
    assert {"src/rare/evaluate/stage.py", "src/rare/model/__init__.py", "src/rare/mbeir.py"} <= files
    top = {str(p.relative_to(ROOT)) for p in stages.import_closure("rare.cli", top_level_only=True)}
    assert "src/rare/cli.py" in top and "src/rare/serve/app.py" not in top  # serve's imports are its own


@pytest.mark.parametrize("stage", list(stages.stages()), ids=lambda s: s.name)
def test_the_cli_runs_every_declared_command(stage: stages.Stage, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry's command lines and the typer commands agree: each parses (options, choices, paths
    that must exist) and reaches the stage's own function with the declared paths."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    for path in [*stage.inputs.values(), *stage.needs]:
        (tmp_path / path).mkdir(parents=True, exist_ok=True)
    calls = []

    def fake_run(step: stages.Step, run_name: str, **kwargs):
        calls.append((step, run_name, kwargs))
        return {"score": {"local": 0.0}} if step is stages.EVALUATE else Path("x")

    monkeypatch.setattr("rare.cli._run", fake_run)
    result = CliRunner().invoke(app, stage.cmd.split()[1:])
    assert result.exit_code == 0, result.output
    ((step, run_name, kwargs),) = calls
    assert step is stage.step and run_name.startswith(step.command)
    given = {str(v) for v in kwargs.values() if isinstance(v, Path)}
    assert set(stage.inputs.values()) <= given
    assert {v for k, v in stage.options.items() if k in ("--out", "--metrics")} <= given


def test_the_variant_matrix_follows_one_table() -> None:
    names = [s.name for s in stages.stages()]
    for v in VARIANTS:
        assert f"train_{v}" in names and f"eval_{v}" in names
    assert [n for n in names if n.startswith("eval_infer_")] == [f"eval_infer_{v}" for v in VARIANTS if v != "none"]
    both = stages.stage("eval_infer_both")
    assert both.inputs["--model"] == "models/none" and both.options["--inputs"] == "both"
    assert set(both.deps) >= {"data/enhanced/corpus", "data/enhanced/queries", "models/none"}
    assert stages.stage("train_query").inputs == {"--data": "data/raw", "--queries-enhanced": "data/enhanced/queries"}
    report = stages.stage("report")
    assert [d for d in report.deps if d.startswith("eval/")] == [f"eval/{e}" for e in stages.EVALUATIONS]


def test_the_committed_lock_and_checkpoint_keep_their_stages() -> None:
    """Renaming a stage or caching the committed checkpoint would orphan dvc.lock / models/pretrain."""
    lock = yaml.safe_load((ROOT / "dvc.lock").read_text(encoding="utf-8"))["stages"]
    declared = stages.pipeline()["stages"]
    assert set(lock) <= set(declared)
    assert {"models/pretrain": {"cache": False}} in declared["pretrain"]["outs"]
    assert "profile" not in declared["pretrain"]["params"]
    for stage in stages.stages():
        written = {o.path for o in stage.outs}
        assert written >= {o["path"] for o in lock[stage.name].get("outs", [])}, stage.name


def test_metrics_are_the_scores_only() -> None:
    declared = stages.pipeline()["stages"]
    metrics = [next(iter(m)) for s in declared.values() for m in s.get("metrics", [])]
    assert metrics == [f"eval/{e}/scores.json" for e in stages.EVALUATIONS]


def test_check_flag_reports_a_stale_dvc_yaml(tmp_path: Path) -> None:
    stale = tmp_path / "dvc.yaml"
    stale.write_text("stages: {}\n", encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "rare", "dvc-yaml", str(stale), "--check"], capture_output=True,
                            text=True)
    assert result.returncode == 1 and result.stderr.strip() == (
        f"error: {stale}: differs from rare.stages; run `rare dvc-yaml` to regenerate it")
    fresh = subprocess.run([sys.executable, "-m", "rare", "dvc-yaml", str(stale)], capture_output=True, text=True)
    assert fresh.returncode == 0 and stale.read_text(encoding="utf-8") == stages.dvc_yaml()


def test_rare_never_imports_the_flows_package() -> None:
    """flows/ (the pipeline and the UIs) imports rare, never the other way round."""
    for module in ("rare.cli", "rare.stageflow", *(s.module for s in stages.STEPS.values())):
        assert not [p for p in _finder_closure(module) if p.is_relative_to(ROOT / "flows")], module

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
from rare.stages import declare
from rare.stages.variants import VARIANTS, VariantSpec

ROOT = stages.ROOT


def test_committed_dvc_yaml_is_the_generated_one() -> None:
    assert (ROOT / "dvc.yaml").read_text(encoding="utf-8") == stages.dvc_yaml(), "run `rare dvc-yaml`"


def _covered(path: Path, deps: list[str]) -> bool:
    rel = path.relative_to(ROOT)
    return any(rel == Path(d) or Path(d) in rel.parents for d in deps)


# The CLI mount, the declarations and the variant table reach a stage through its cmd, which DVC tracks;
# rare.stageflow names rare.stages.declare for the type checker only (modulefinder's bytecode scan cannot tell).
MOUNT = tuple(sorted(declare.MOUNT))
MOUNT_FILES = {"src/rare/cli.py", "src/rare/stages/__init__.py", "src/rare/stages/declare.py",
               "src/rare/stages/variants.py", "src/rare/stages/command.py"}


def _finder_closure(module: str, excludes: tuple[str, ...] = MOUNT) -> set[Path]:
    """Every module of rare and flows that ``module`` may import, lazily inside functions too, found by
    the standard library's bytecode scanner (not the registry's own walker)."""
    finder = modulefinder.ModuleFinder(path=[str(ROOT / "src"), str(ROOT)], excludes=list(excludes))
    finder.run_script(str(declare._module_file(module)))
    return {Path(m.__file__) for name, m in finder.modules.items()
            if m.__file__ and name.split(".")[0] in ("rare", "flows", "__main__")}


@pytest.mark.parametrize("stage", list(stages.stages()), ids=lambda s: s.name)
def test_deps_are_the_files_of_the_import_closure(stage: stages.Stage) -> None:
    """A change to any file a stage's function may run reruns it (mbeir.py, config/__init__.py, errors.py, ...);
    a file it never runs does not: one dep per file, no folders, no CLI mount, no declarations."""
    needed = {str(p.relative_to(ROOT)) for p in _finder_closure(stage.step.module)}
    code = {d for d in stage.deps if d.startswith("src/")}
    assert "src/rare/mbeir.py" in needed  # the scan found the headline cutoffs every stage imports
    assert code == needed, (f"{stage.name}: missing {sorted(needed - code)}, extra {sorted(code - needed)}")
    assert all((ROOT / d).is_file() for d in code)
    assert not MOUNT_FILES & code
    assert f"src/{stage.step.module.replace('.', '/')}.py" in code  # its own stage module


def test_the_stage_modules_do_not_import_the_cli() -> None:
    """Imported in a fresh interpreter, no stage module loads the CLI (or torch: the CLI reads them first)."""
    modules = sorted({s.module for s in stages.STEPS.values()})
    code = (f"import sys; [__import__(m) for m in {modules!r}]; "
            "print(sorted(n for n in sys.modules if n in ('rare.cli', 'torch', 'mlflow', 'prefect')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_closure_walker_sees_lazy_imports_and_skips_type_only_ones() -> None:
    """The generator's walker follows imports inside functions (the stages import torch & co. lazily) and
    leaves out ``if TYPE_CHECKING:`` blocks, which never run."""
    files = {str(p.relative_to(ROOT)) for p in stages.import_closure("rare.stages.evaluate")}
    assert {"src/rare/evaluate/protocol.py", "src/rare/model/__init__.py", "src/rare/mbeir.py"} <= files
    flow = {str(p.relative_to(ROOT)) for p in stages.import_closure("rare.stageflow")}
    assert "src/rare/stageflow.py" in flow and not MOUNT_FILES & flow


def _changed(before: dict, after: dict) -> set[str]:
    """Stages DVC would rerun from the declarations alone: new ones, and those whose cmd, deps or params differ."""
    return {name for name, entry in after["stages"].items()
            if name not in before["stages"] or any(entry.get(k) != before["stages"][name].get(k)
                                                   for k in ("cmd", "deps", "params"))}


def test_a_file_stales_only_the_stages_that_run_it() -> None:
    """The enhance stages alone run the OpenAI client; no stage runs the CLI mount; every stage runs mbeir."""
    deps = {s.name: set(s.deps) for s in stages.stages()}
    assert {n for n, d in deps.items() if "src/rare/enhance/backends/openai.py" in d} == {
        "enhance_corpus", "enhance_queries"}
    assert not {n for n, d in deps.items() if "src/rare/cli.py" in d}
    assert all("src/rare/mbeir.py" in d for d in deps.values())
    assert not {n for n, d in deps.items() if n != "report" and "src/rare/report/table.py" in d}


def test_a_new_variant_adds_its_stages_and_changes_only_the_report(monkeypatch: pytest.MonkeyPatch) -> None:
    """Adding a variant (one VARIANTS line): DVC sees the new variant's train and evaluation stages and a
    changed report (its cmd and needs), and every other stage as it was, deps included (the variant table
    is no stage's code dep; tests/test_stage_staleness.py checks it with `dvc status`)."""
    before = stages.pipeline()
    monkeypatch.setitem(stages.VARIANTS, "corpus-append", VariantSpec(corpus=True, queries=False, corpus_mode="append"))
    monkeypatch.setattr("rare.stages.evaluate.INFERENCE_ONLY", (*stages.INFERENCE_ONLY, "corpus-append"))
    evaluations = (*stages.EVALUATIONS[:5], "corpus-append", *stages.EVALUATIONS[5:], "infer-corpus-append")
    monkeypatch.setattr("rare.stages.report.EVALUATIONS", evaluations)
    monkeypatch.setattr(stages, "EVALUATIONS", evaluations)
    after = stages.pipeline()
    assert _changed(before, after) == {"train_corpus_append", "eval_corpus_append", "eval_infer_corpus_append", "report"}
    # What tells the variant apart from `corpus` reaches its commands, and so DVC (it tracks cmd).
    for name in ("train_corpus_append", "eval_corpus_append", "eval_infer_corpus_append"):
        assert "--corpus-enhanced data/enhanced/corpus" in after["stages"][name]["cmd"]
        assert after["stages"][name]["cmd"].endswith("--corpus-mode append"), after["stages"][name]["cmd"]
    assert "--corpus-mode" not in after["stages"]["train_corpus"]["cmd"]


def test_a_variants_corpus_mode_builds_the_evaluated_texts(tiny_root: Path, tmp_path: Path) -> None:
    """`--corpus-mode` overrides the model's own mode for the candidates' texts, and only when given."""
    import shutil

    from rare.config.evaluate import EvaluateParams
    from rare.contracts import ModelMeta
    from rare.evaluate.protocol import plan

    enhanced = tmp_path / "enhanced"
    shutil.copytree(tiny_root / "cand_pool", enhanced / "cand_pool")  # the enhanced mirror's layout
    meta = ModelMeta(variant="none")
    own = plan("corpus", meta, "corpus", tiny_root, EvaluateParams(), corpus_enhanced=enhanced)
    appended = plan("corpus-append", meta, "corpus-append", tiny_root, EvaluateParams(), corpus_enhanced=enhanced,
                    corpus_mode="append")
    assert own.corpus_view.mode == meta.text_mode.corpus == "replace"  # the contract's default
    assert appended.corpus_view.mode == "append" and appended.query_view == own.query_view


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

    monkeypatch.setattr(f"{stage.step.module}.run_stage", fake_run)
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

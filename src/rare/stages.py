"""The pipeline, declared once: every stage's command, params, inputs, outputs and the function it runs.

``dvc.yaml`` is generated from this module (``rare dvc-yaml``; a test keeps the committed file equal to
it), the ``rare`` commands take their choices from it, and ``rare.stageflow`` runs a stage's function
as one Prefect flow. A stage's code deps are the import closure of its function's module (plus what
the ``rare`` command itself imports), so editing any module a stage imports reruns that stage.

Add a variant: one line in ``rare.data.views.VARIANTS`` (its training, its evaluation and its
inference-only evaluation follow). Add a stage: one ``Stage(...)`` in ``stages()`` plus its function.
This module imports nothing heavy: the CLI reads it before any stage starts.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

from rare.data.views import VARIANTS

ROOT = Path(__file__).resolve().parents[2]  # the checkout: dvc.yaml, params.yaml, src/, flows/
BASELINE = "none"  # the variant whose model the inference-only rows evaluate on enhanced inputs
ZERO_SHOT = "zero-shot"
INFERENCE_ONLY = tuple(v for v in VARIANTS if v != BASELINE)  # infer-<v>: the baseline model on <v>'s inputs
EVALUATIONS = (ZERO_SHOT, *VARIANTS, *(f"infer-{v}" for v in INFERENCE_ONLY))  # the report's row order

RAW, PRETRAINED, ZERO_SHOT_MODEL = "data/raw", "models/pretrain", "models/zero-shot"
ENHANCED = {"corpus": "data/enhanced/corpus", "queries": "data/enhanced/queries"}
# The real profiles' overrides of each section (params.yaml): each sets every profiled section, so DVC finds them.
PROFILE_OVERRIDES = ("profiles.mbeir", "profiles.debian_clipart")


@dataclass(frozen=True)
class Step:
    """One kind of work: the ``rare`` command that runs it, the params sections whose values change its
    outputs (DVC reruns it when they change), and ``module:function``, the function it runs."""

    command: str
    run: str
    params: tuple[str, ...]
    profiled: bool = True  # also depends on `profile` and the active profile's overrides of its sections

    @property
    def module(self) -> str:
        return self.run.partition(":")[0]


DATA = Step("data", "rare.data.entry:run", ("data",))
ENHANCE = Step("enhance", "rare.enhance.entry:run", ("enhance",))
# Pretraining serves the embedded dual encoder only: the committed checkpoint (cache: false) stays up to
# date when another profile is selected.
PRETRAIN = Step("pretrain", "rare.pretrain.entry:run_pretrain", ("pretrain",), profiled=False)
ZERO_SHOT_EXPORT = Step("zero-shot", "rare.pretrain.entry:run_zero_shot", ("train",))
TRAIN = Step("train", "rare.train.entry:run", ("train",))
EVALUATE = Step("evaluate", "rare.evaluate.entry:run", ("evaluate",))
REPORT = Step("report", "rare.report.entry:run", ("report",))
STEPS = {s.command: s for s in (DATA, ENHANCE, PRETRAIN, ZERO_SHOT_EXPORT, TRAIN, EVALUATE, REPORT)}


@dataclass(frozen=True)
class Out:
    """A path a stage writes. ``cache=False`` keeps it in git (small files DVC should not move into its
    cache); ``kind`` is how DVC shows it: an output, a plot, or a metric. Metrics are the M-BEIR scores
    only, so `dvc exp show` opens on them (a column per key); losses, failure rates and the pretraining
    figures are plain outputs, still in git and in `dvc plots`."""

    path: str
    cache: bool = True
    kind: Literal["outs", "metrics", "plots"] = "outs"
    plot: dict[str, str] = field(default_factory=dict)

    def entry(self) -> str | dict[str, dict[str, Any]]:
        opts: dict[str, Any] = {**({} if self.cache else {"cache": False}), **self.plot}
        return {self.path: opts} if opts else self.path


@dataclass(frozen=True)
class Stage:
    """One DVC stage: ``rare <command> <args> <inputs> <options>``. ``inputs`` are the paths it reads by
    option, ``needs`` those it reads without one (the pretrained tower, named in params); all are deps."""

    name: str
    step: Step
    args: tuple[str, ...] = ()
    inputs: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    needs: tuple[str, ...] = ()
    outs: tuple[Out, ...] = ()

    @property
    def cmd(self) -> str:
        opts = [f"{k} {v}" for k, v in {**self.inputs, **self.options}.items()]
        return " ".join(["rare", self.step.command, *self.args, *opts])

    @property
    def params(self) -> list[str]:
        if not self.step.profiled:
            return list(self.step.params)
        return ["profile", *self.step.params, *(f"{p}.{s}" for p in PROFILE_OVERRIDES for s in self.step.params)]

    @property
    def deps(self) -> list[str]:
        return [*self.needs, *self.inputs.values(), *code_deps(self.step.module)]


def _enhanced_inputs(variant: str) -> dict[str, str]:
    corpus, queries = VARIANTS[variant]
    return {**({"--corpus-enhanced": ENHANCED["corpus"]} if corpus else {}),
            **({"--queries-enhanced": ENHANCED["queries"]} if queries else {})}


def _enhance(side: str) -> Stage:
    metrics = f"metrics/enhance_{side}.json"
    return Stage(f"enhance_{side}", ENHANCE, (side,), {"--data": RAW},
                 {"--out": ENHANCED[side], "--metrics": metrics}, outs=(Out(ENHANCED[side]), Out(metrics, cache=False)))


def _train(variant: str) -> Stage:
    loss = tuple(Out(f"metrics/loss/{variant}_{split}.json", cache=False) for split in ("train", "val"))
    metrics = f"metrics/train_{variant}.json"
    return Stage(f"train_{variant}", TRAIN, (variant,), {"--data": RAW, **_enhanced_inputs(variant)},
                 {"--out": f"models/{variant}", "--metrics": metrics}, needs=(PRETRAINED,),
                 outs=(Out(f"models/{variant}"), *loss, Out(metrics, cache=False)))


def _evaluate(name: str, model: str, inputs: str) -> Stage:
    out = f"eval/{name}"
    return Stage(f"eval_{name.replace('-', '_')}", EVALUATE, (name,),
                 {"--model": model, "--data": RAW, **_enhanced_inputs(inputs)}, {"--inputs": inputs, "--out": out},
                 outs=(Out(f"{out}/runs"), Out(f"{out}/info.json"), Out(f"{out}/metrics.json", cache=False),
                       Out(f"{out}/headline.json", cache=False), Out(f"{out}/scores.json", cache=False, kind="metrics")))


def _bar(x: str, y: str) -> dict[str, str]:
    return {"template": "bar_horizontal", "x": x, "y": y}


def stages() -> Iterator[Stage]:
    """Every stage, in the order dvc.yaml lists them (DVC orders the runs by their deps)."""
    yield Stage("data", DATA, (RAW,), outs=(Out(RAW),))
    yield from (_enhance(side) for side in ENHANCED)
    yield Stage("pretrain", PRETRAIN, (PRETRAINED,), options={"--metrics": "metrics/pretrain.json"},
                outs=(Out(PRETRAINED, cache=False), Out("metrics/loss/pretrain.json", cache=False),
                      Out("metrics/pretrain.json", cache=False)))
    yield Stage("zero_shot", ZERO_SHOT_EXPORT, options={"--out": ZERO_SHOT_MODEL}, needs=(PRETRAINED,),
                outs=(Out(ZERO_SHOT_MODEL),))
    yield from (_train(v) for v in VARIANTS)
    yield _evaluate(ZERO_SHOT, ZERO_SHOT_MODEL, BASELINE)
    yield from (_evaluate(v, f"models/{v}", v) for v in VARIANTS)
    yield from (_evaluate(f"infer-{v}", f"models/{BASELINE}", v) for v in INFERENCE_ONLY)
    yield Stage("report", REPORT, inputs={"--data": RAW, **_enhanced_inputs("both")},
                options={"--evals": "eval", "--out": "report"}, needs=tuple(f"eval/{e}" for e in EVALUATIONS),
                outs=(Out("report/report.md"), Out("report/summary.json"),
                      Out("report/scores.png", kind="plots"), Out("report/gallery.png", kind="plots"),
                      Out("report/scores_local.csv", kind="plots", plot=_bar("score", "evaluation")),
                      Out("report/scores_global.csv", kind="plots", plot=_bar("score", "evaluation"))))


def stage(name: str) -> Stage:
    found = {s.name: s for s in stages()}
    if name not in found:
        raise ValueError(f"unknown stage {name!r}; known: {', '.join(found)}")
    return found[name]


# -- code deps: the import closure ----------------------------------------------------------------
def _module_file(module: str) -> Path | None:
    top, *_ = module.split(".")
    base = ROOT / ("src" if top == "rare" else "") / Path(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if top in ("rare", "flows") and candidate.is_file():
            return candidate
    return None


def _imports(path: Path, top_level_only: bool) -> set[str]:
    """Modules ``path`` imports (``from a import b`` counts ``a`` and ``a.b``), lazily inside functions too
    unless ``top_level_only``; each one's parent packages come with it (Python runs their __init__).
    rare uses absolute imports only."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in tree.body if top_level_only else ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
    return {".".join(m.split(".")[:i]) for m in found for i in range(1, m.count(".") + 2)}


@cache
def import_closure(module: str, top_level_only: bool = False) -> frozenset[Path]:
    """Files of rare and flows that importing ``module`` (and calling into it) may run."""
    seen: dict[str, Path] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        path = _module_file(name)
        if name in seen or path is None:
            continue
        seen[name] = path
        todo.extend(_imports(path, top_level_only and name == module))
    return frozenset(seen.values())


# The `rare` command runs each stage's function through these (rare.cli's own module-level imports).
DISPATCH = ("rare.cli", "rare.stageflow")


def code_deps(module: str) -> list[str]:
    """The closure as DVC deps: a file of a subpackage stands for its folder (a few deps, few `dvc exp show`
    columns; editing a subpackage reruns the stages that import any of it), a top-level module for itself."""
    files = import_closure(module) | import_closure(DISPATCH[0], True) | import_closure(DISPATCH[1])
    deps = set()
    for f in files:
        rel = f.relative_to(ROOT)
        deps.add(str(Path(*rel.parts[:3])) if rel.parts[0] == "src" and len(rel.parts) > 3 else str(rel))
    return sorted(deps)


# -- dvc.yaml ---------------------------------------------------------------------------------------
HEADER = """\
# GENERATED by `rare dvc-yaml` from src/rare/stages.py: edit that module, then run `rare dvc-yaml`.
# data -> enhance (corpus, queries) -> train (one per variant) -> evaluate (trained + inference-only) -> report;
# pretrain (the vision tower; its checkpoint is committed) -> train, and -> zero_shot -> eval_zero_shot -> report
# Each stage depends on the code it imports and reads only its own params section (plus the active profile's
# overrides of it). Run it all with `make run` (one Prefect parent flow, one MLflow parent run) or `dvc repro`.
# DVC metrics are scores only (`dvc exp show`, `dvc metrics diff`); every R@k is in eval/<name>/metrics.json,
# timings and counts in metrics/runtime/ and eval/<name>/runtime.json (neither git nor DVC tracks them).
# `dvc plots show` (HTML, loads vega from a CDN) or `dvc plots show --json` (offline). One line per variant.
"""


def _plots() -> list[dict[str, Any]]:
    loss = {split: {f"metrics/loss/{v}_{split}.json": "loss" for v in VARIANTS} for split in ("train", "val")}
    headline = {f"eval/{e}/headline.json": "task" for e in EVALUATIONS}
    per_eval = "(one panel per evaluation)"
    return [
        {"pretraining_loss": {"title": "Pretraining loss per step (vision tower against the frozen text tower)",
                              "template": "linear", "x": "step", "y": {"metrics/loss/pretrain.json": "loss"}}},
        {"training_loss": {"title": "Training loss per step (the batch's contrastive loss)", "template": "linear",
                           "x": "step", "y": loss["train"]}},
        {"validation_loss": {"title": "Validation loss per step", "template": "linear", "x": "step",
                             "y": loss["val"]}},
        {"headline_recall_local": {"title": f"Headline recall per dataset-task, local pools {per_eval}",
                                   **_bar("local", "task"), "y": headline}},
        {"headline_recall_global": {"title": f"Headline recall per dataset-task, global pool {per_eval}",
                                    **_bar("global", "task"), "y": headline}},
    ]


def pipeline() -> dict[str, Any]:
    """dvc.yaml as data."""
    out: dict[str, Any] = {}
    for s in stages():
        entry: dict[str, Any] = {"cmd": s.cmd, "deps": s.deps, "params": s.params}
        for kind in ("outs", "metrics", "plots"):
            entries = [o.entry() for o in s.outs if o.kind == kind]
            if entries:
                entry[kind] = entries
        out[s.name] = entry
    return {"stages": out, "plots": _plots()}


def dvc_yaml() -> str:
    import yaml

    return HEADER + yaml.safe_dump(pipeline(), sort_keys=False, width=120)

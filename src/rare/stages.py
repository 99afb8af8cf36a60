"""The pipeline, declared once: every stage's command, params, inputs, outputs and the function it runs.

``dvc.yaml`` is generated from this module (``rare dvc-yaml``; a test keeps the committed file equal to
it), the ``rare`` commands take their choices from it, and ``rare.stageflow`` runs a stage's function
as one Prefect flow. A stage's code deps are the files of its function's module's import closure (lazy
imports included, type-checking-only imports not), so editing a file reruns the stages that may run it.

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


@cache
def profile_sections() -> dict[str, frozenset[str]]:
    """Each profile of params.yaml and the sections it overrides: a stage depends on every profile's override of
    its sections (DVC needs the key to exist, so a section a profile leaves alone is not listed)."""
    import yaml

    profiles = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8")).get("profiles") or {}
    return {name: frozenset(sections or ()) for name, sections in profiles.items()}


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
        return ["profile", *self.step.params, *(f"profiles.{p}.{s}" for p, sections in profile_sections().items()
                                                for s in self.step.params if s in sections)]

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
                options={"--evals": "eval", "--out": "report", "--order": ",".join(EVALUATIONS)},
                needs=tuple(f"eval/{e}" for e in EVALUATIONS),
                outs=(Out("report/report.md"), Out("report/summary.json"), Out("report/intervals.json", cache=False),
                      Out("report/audit.parquet"),
                      Out("report/scores.png", kind="plots"), Out("report/gallery.png", kind="plots"),
                      Out("report/scores_local.csv", kind="plots", plot=_bar("score", "evaluation")),
                      Out("report/scores_global.csv", kind="plots", plot=_bar("score", "evaluation"))))


# -- the seed study (`make study`): replicas of every trained variant and evaluation ---------------------
STUDY_MODELS = "models/study"


def replica(name: str, seed: int) -> str:
    """``corpus`` at seed 2 -> ``corpus@s2``: the report joins ``<name>@s<seed>`` to the row ``<name>``."""
    return f"{name}@s{seed}"


def study_stages(seeds: list[int]) -> Iterator[Stage]:
    """Train every variant again with each seed of ``seeds`` (``rare train --seed``) and evaluate it as the
    pipeline does, into ``eval/<name>@s<seed>``; the inference-only rows use that seed's baseline model.
    Run by ``rare.study`` (not in dvc.yaml: the default pipeline trains each variant once)."""
    for seed in seeds:
        for v in VARIANTS:
            model = f"{STUDY_MODELS}/{replica(v, seed)}"
            yield Stage(f"train_{v}_s{seed}", TRAIN, (v,), {"--data": RAW, **_enhanced_inputs(v)},
                        {"--out": model, "--seed": str(seed)}, needs=(PRETRAINED,), outs=(Out(model),))
        evals = [(v, f"{STUDY_MODELS}/{replica(v, seed)}", v) for v in VARIANTS]
        evals += [(f"infer-{v}", f"{STUDY_MODELS}/{replica(BASELINE, seed)}", v) for v in INFERENCE_ONLY]
        for name, model, inputs in evals:
            out = f"eval/{replica(name, seed)}"
            yield Stage(f"eval_{name.replace('-', '_')}_s{seed}", EVALUATE, (replica(name, seed),),
                        {"--model": model, "--data": RAW, **_enhanced_inputs(inputs)}, {"--inputs": inputs, "--out": out},
                        outs=(Out(f"{out}/metrics.json"),))


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


def _type_only(node: ast.AST) -> bool:
    """``if TYPE_CHECKING:``: imports for the type checker, which Python never runs."""
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(nodes: list[ast.stmt]) -> Iterator[ast.AST]:
    """Every node under ``nodes``, function bodies included, except the type checker's own blocks."""
    todo: list[ast.AST] = list(nodes)
    while todo:
        node = todo.pop()
        yield node
        if _type_only(node):
            todo.extend(node.orelse)  # type: ignore[attr-defined]
            continue
        todo.extend(ast.iter_child_nodes(node))


def _imports(path: Path) -> set[str]:
    """Modules ``path`` imports (``from a import b`` counts ``a`` and ``a.b``), lazily inside functions too;
    each one's parent packages come with it (Python runs their __init__). rare uses absolute imports only."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in _walk(tree.body):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
    return {".".join(m.split(".")[:i]) for m in found for i in range(1, m.count(".") + 2)}


@cache
def import_closure(module: str) -> frozenset[Path]:
    """Files of rare and flows that importing ``module`` (and calling into it) may run."""
    seen: dict[str, Path] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        path = _module_file(name)
        if name in seen or path is None:
            continue
        seen[name] = path
        todo.extend(_imports(path))
    return frozenset(seen.values())


def code_deps(module: str) -> list[str]:
    """Every file of the closure of the stage function's module, one dep each: editing a file reruns exactly
    the stages that may run it. The ``rare`` command that mounts the function (rare.cli) and the declarations
    (this module) stay out: what they pass a stage is its cmd, which DVC tracks itself."""
    return sorted(str(f.relative_to(ROOT)) for f in import_closure(module))


# -- dvc.yaml ---------------------------------------------------------------------------------------
HEADER = """\
# GENERATED by `rare dvc-yaml` from src/rare/stages.py: edit that module, then run `rare dvc-yaml`.
# data -> enhance (corpus, queries) -> train (one per variant) -> evaluate (trained + inference-only) -> report;
# pretrain (the vision tower; its checkpoint is committed) -> train, and -> zero_shot -> eval_zero_shot -> report
# Each stage depends on the files its function's module imports and reads only its own params section (plus the active profile's
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

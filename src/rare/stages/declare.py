"""What a stage declaration is made of (``Step``, ``Stage``, ``Out``), the paths stages hand each other, and
a stage's code deps: the files of its stage module's import closure.

Each stage module (``rare.stages.<stage>``) declares its stages with these; ``rare.stages`` gathers them
into dvc.yaml. This module imports nothing heavy: the CLI reads it before any stage starts.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

from rare.stages.variants import VARIANTS

ROOT = Path(__file__).resolve().parents[3]  # the checkout: dvc.yaml, params.yaml, src/, flows/
RAW, PRETRAINED, ZERO_SHOT_MODEL = "data/raw", "models/pretrain", "models/zero-shot"
ENHANCED = {"corpus": "data/enhanced/corpus", "queries": "data/enhanced/queries"}
# The mount: modules that turn a command line into a call of a stage's function, and the declarations that
# write those command lines. What they hand a stage is its ``cmd``, which DVC tracks itself, so the code-dep
# closure neither counts nor follows them: a comment in the CLI, a new variant or another stage's
# declaration reruns nothing that already ran.
MOUNT = frozenset({"rare.cli", "rare.stages", "rare.stages.declare", "rare.stages.variants",
                   "rare.stages.command"})


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
    outputs (DVC reruns it when they change), and ``module:function``, the function it runs (in its stage
    module, ``rare.stages.<stage>``)."""

    command: str
    run: str
    params: tuple[str, ...]
    profiled: bool = True  # also depends on `profile` and the active profile's overrides of its sections

    @property
    def module(self) -> str:
        return self.run.partition(":")[0]


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


def enhanced_inputs(variant: str) -> dict[str, str]:
    """The enhanced folders a stage of ``variant`` reads, as the options its cmd passes."""
    corpus, queries = VARIANTS[variant].sides
    return {**({"--corpus-enhanced": ENHANCED["corpus"]} if corpus else {}),
            **({"--queries-enhanced": ENHANCED["queries"]} if queries else {})}


def bar(x: str, y: str) -> dict[str, str]:
    """A horizontal bar chart of ``y`` by ``x`` (`dvc plots`)."""
    return {"template": "bar_horizontal", "x": x, "y": y}


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
    """Files of rare and flows that importing ``module`` (and calling into it) may run, short of the mount."""
    seen: dict[str, Path] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        path = _module_file(name)
        if name in seen or path is None or (name in MOUNT and name != module):
            continue
        seen[name] = path
        todo.extend(_imports(path))
    return frozenset(seen.values())


def code_deps(module: str) -> list[str]:
    """Every file of the closure of the stage module, one dep each: editing a file reruns exactly the stages
    that may run it. The mount (``MOUNT``) stays out: what it passes a stage is its cmd, which DVC tracks."""
    return sorted(str(f.relative_to(ROOT)) for f in import_closure(module))

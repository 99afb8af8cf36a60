"""What every stage command shares: its typer options, the params check before any heavy import, and the
call of the stage's function as one Prefect flow run (``rare.stageflow``).

Part of the mount (``rare.stages.declare.MOUNT``): it passes a stage what its command line says, so it is
no stage's code dep.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import typer

from rare.stages.declare import Step
from rare.stages.variants import VARIANTS, TextMode

Variant = Literal[tuple(VARIANTS)]  # type: ignore[valid-type]  # choices checked at parse time
InFile = {"exists": True, "dir_okay": False, "readable": True}  # checked at parse time
InDir = {"exists": True, "file_okay": False}
ParamsOpt = Annotated[Path, typer.Option("--params", help="params.yaml to read this stage's section from.", **InFile)]
DataOpt = Annotated[Path, typer.Option("--data", help="M-BEIR-layout root (raw data).", **InDir)]
CorpusEnhOpt = Annotated[Optional[Path], typer.Option("--corpus-enhanced", help="Output of `rare enhance corpus`.",
                                                      **InDir)]
CorpusModeOpt = Annotated[Optional[TextMode], typer.Option(
    "--corpus-mode", help="How a candidate's enhancement joins its text, instead of train.text_mode.corpus (a "
    "variant's own choice, from its entry in rare.stages.variants).")]
QueriesEnhOpt = Annotated[Optional[Path], typer.Option("--queries-enhanced", help="Output of `rare enhance queries`.",
                                                       **InDir)]


def check_section(section: str, params_file: Path) -> None:
    """The stage's params section, validated before the flow (and its heavy imports) starts: values, and the
    paths it configures (a missing pretrained folder is named here, never as a hub error mid-stage)."""
    from rare.config import load_section
    from rare.config.paths import check_paths

    check_paths(section, load_section(section, params_file), params_file)


def run_stage(step: Step, run_name: str, **kwargs: Any) -> Any:
    """``step``'s function as one Prefect flow run named ``run_name``, after its params are checked."""
    check_section(step.params[0], kwargs["params_file"])
    from rare import stageflow

    return stageflow.run_step(step, run_name, **kwargs)


def enhanced_for(variant: str, corpus_enhanced: Path | None,
                 queries_enhanced: Path | None) -> tuple[Path | None, Path | None]:
    """The enhanced folders ``variant`` reads, each required when the variant reads it and dropped when it
    does not: the library reads a side's enhanced text exactly when it is handed that side's folder."""
    use_corpus, use_query = VARIANTS[variant].sides
    for needed, given, option in ((use_corpus, corpus_enhanced, "--corpus-enhanced"),
                                  (use_query, queries_enhanced, "--queries-enhanced")):
        if needed and given is None:
            raise typer.BadParameter(f"variant {variant!r} needs enhanced data: pass {option}")
    return (corpus_enhanced if use_corpus else None), (queries_enhanced if use_query else None)

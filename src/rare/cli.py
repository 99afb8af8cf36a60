"""The ``rare`` command. Each stage command runs its Prefect flow from ``flows/``.

Heavy imports (torch, prefect, mlflow) happen inside the commands so ``rare --help`` is instant.
Paths come in as arguments; parameters come from the stage's own section of params.yaml.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from rare import runtime

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__, pretty_exceptions_enable=False)
enhance_app = typer.Typer(no_args_is_help=True, help="VLM enhancement of the corpus or the queries.")
app.add_typer(enhance_app, name="enhance")

ParamsOpt = Annotated[Path, typer.Option("--params", help="params.yaml to read this stage's section from.")]
DataOpt = Annotated[Path, typer.Option("--data", help="M-BEIR-layout root (raw data).")]
CorpusEnhOpt = Annotated[Optional[Path], typer.Option("--corpus-enhanced", help="Output of `rare enhance corpus`.")]
QueriesEnhOpt = Annotated[Optional[Path], typer.Option("--queries-enhanced", help="Output of `rare enhance queries`.")]


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False) -> None:
    runtime.configure()
    runtime.setup_logging(verbose)


def _fail(exc: Exception) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=1)


@app.command()
def validate(
    root: Annotated[Path, typer.Argument(help="M-BEIR-layout root to check.")],
    images: Annotated[bool, typer.Option("--images/--no-images", help="Open every referenced image.")] = True,
    max_report: Annotated[int, typer.Option(help="Print at most this many problems (all are counted).")] = 200,
) -> None:
    """Check a whole M-BEIR root and report every problem as file:line: cause."""
    from rare.validate import print_report, validate_root

    report = validate_root(root, check_images=images)
    print_report(report, max_report)
    if report.errors:
        raise typer.Exit(code=1)


@app.command()
def params(path: Annotated[Path, typer.Argument(help="params file")] = Path("params.yaml")) -> None:
    """Validate every section of params.yaml (with the active profile applied) and print it."""
    from rich import print_json

    from rare.config import ConfigError, load_all

    try:
        sections = load_all(path)
    except ConfigError as exc:
        _fail(exc)
    print_json(data={k: v.model_dump(mode="json") for k, v in sections.items()})


def run_cli() -> None:
    """Entry point that turns library errors into one clear line instead of a traceback."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    run_cli()

"""The ``rare`` command: the mount of every stage module's command (``rare.stages.MODULES``; each runs its
stage's function as one Prefect flow run) and the commands that are no stage: validate, params, dvc-yaml,
import, debian-sources, score, serve.

Heavy imports (torch, prefect, mlflow) happen inside the commands, after the arguments and the
stage's params section are checked, so a mistake costs a second, not a Prefect run. Every
expected failure ends as one ``error: <what>: <cause>`` line on stderr and exit code 1 (see
``rare.failures``); ``--debug`` or ``RARE_DEBUG=1`` adds the traceback.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperGroup

from rare import failures, runtime, stages
from rare.stages.command import CorpusEnhOpt, DataOpt, InFile, ParamsOpt, QueriesEnhOpt, check_section
from rare.stages.variants import VARIANTS

HELP = ("rare: reasoning-augmented multimodal retrieval on M-BEIR-format data. Generate or validate the data, "
        "enhance it with a VLM, train the retriever per ablation variant, evaluate by the M-BEIR protocol, report.")


def _readable_help(command: Any) -> None:
    """Metavars a user reads: none for flags (typer prints ``<bool>``), the parameter's name for arguments
    (``VARIANT``, not ``{variant}``) and repeatable options (not ``<list[str]>``); choices and ranges stay in
    the type column."""
    for param in command.params:
        if param.metavar is not None:
            continue
        if getattr(param, "is_flag", False):
            param.metavar = ""
        elif param.param_type_name == "argument" or getattr(param, "multiple", False):
            param.metavar = (param.name or "value").upper()
    help_option = command.get_help_option(typer.Context(command))
    if help_option is not None:
        help_option.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        _readable_help(sub)


class _Rare(TyperGroup):
    """Usage mistakes and expected failures (bad data, bad params, missing files) become one line."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        _readable_help(self)
        kwargs["standalone_mode"] = False
        try:
            code = super().main(*args, **kwargs)
        except typer.Abort:
            sys.exit(130)
        except typer.TyperException as exc:  # usage: unknown variant, missing file, bad option value
            if type(exc).__name__ == "NoArgsIsHelpError":
                exc.show()  # type: ignore[attr-defined]
                sys.exit(0)
            ctx = getattr(exc, "ctx", None)
            message = exc.format_message().replace("Value error, ", "")  # typer's wording of a bad choice
            failures.print_error(f"{ctx.command_path if ctx else 'rare'}: {message}")
            sys.exit(1)
        except Exception as exc:
            line = failures.expected(exc)
            if line is None or failures.debug():  # a bug keeps its traceback
                failures.print_traceback(exc)
            if line is not None:
                failures.print_error(line)
            sys.exit(1)
        if isinstance(code, int) and code:
            sys.exit(code)
        return code


app = typer.Typer(cls=_Rare, add_completion=True, no_args_is_help=True, help=HELP, pretty_exceptions_enable=False)

def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"rare {version('rare')}")
        raise typer.Exit()


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Print the traceback behind an error.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    if debug:
        os.environ[failures.DEBUG_ENV] = "1"
    runtime.configure()
    runtime.setup_logging(verbose)


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
def params(path: Annotated[Path, typer.Argument(help="params file", **InFile)] = Path("params.yaml")) -> None:
    """Validate every section of params.yaml (with the active profile applied) and print it."""
    from rich import print_json

    from rare.config import load_all

    sections = load_all(path)
    print_json(data={k: v.model_dump(mode="json") for k, v in sections.items()})


@app.command("dvc-yaml")
def dvc_yaml(
    path: Annotated[Path, typer.Argument(help="Where to write it.")] = Path("dvc.yaml"),
    check: Annotated[bool, typer.Option("--check", help="Write nothing; exit 1 when PATH differs.")] = False,
) -> None:
    """Write dvc.yaml from the stage declarations in rare.stages (the one place a stage is declared)."""
    from rare.atomic import atomic_write

    text = stages.dvc_yaml()
    if check:
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            raise ValueError(f"{path}: differs from rare.stages; run `rare dvc-yaml` to regenerate it")
        return
    atomic_write(path, [text.encode()])
    typer.echo(f"{path}: {sum(1 for _ in stages.stages())} stages")


for _module in stages.MODULES:  # the stage commands, in pipeline order
    _module.mount(app)


@app.command("import")
def import_(
    sources: Annotated[list[str], typer.Argument(help="Inputs, one dataset each: [NAME=]PATH. A captions file "
                                                 "(.csv/.tsv/.jsonl: image path, text, optional group), a Parquet "
                                                 "file, a Hugging Face datasets folder (save_to_disk), or WebDataset "
                                                 ".tar shards (a file or a folder of them).")],
    out: Annotated[Path, typer.Option("--out", help="M-BEIR root to write (replaced only when the import succeeds).")],
    fmt: Annotated[Optional[str], typer.Option("--format", help="Format of every input (default: recognised "
                                               "from each path): csv, tsv, jsonl, parquet, hf, webdataset.")] = None,
    val: Annotated[float, typer.Option("--val", help="Share of items (groups) held out for validation.")] = 0.1,
    test: Annotated[float, typer.Option("--test", help="Share of items (groups) held out for testing.")] = 0.2,
    seed: Annotated[int, typer.Option("--seed", help="Salt of the content-hash split.")] = 0,
    first_id: Annotated[int, typer.Option("--first-id", min=100, help="Dataset id of the first input; "
                                          "the next count up.")] = 100,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="At most this many items per input "
                                                 "(the first by content hash).")] = None,
    validate: Annotated[bool, typer.Option("--validate/--no-validate", help="Check the written records as "
                                           "`rare validate` does before the root replaces OUT.")] = True,
    link: Annotated[bool, typer.Option("--link/--copy", help="Hard-link image files into OUT where the file "
                                       "system allows (the root then shares them with the input; `rare validate` "
                                       "finds one edited in place), or always write copies.")] = True,
) -> None:
    """Turn image-text collections into an M-BEIR root (t2i, i2t, i2i within groups) that `rare validate` accepts."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from rare.ingest import ImportOptions, Source, import_root

    parsed = [Source.parse(s, fmt) for s in sources]
    options = ImportOptions(val=val, test=test, seed=seed, first_id=first_id, limit=limit, validate=validate,
                            link=link)
    with Progress(SpinnerColumn(), TextColumn("[progress.description]{task.description}"),
                  TextColumn("{task.completed} rows"), TimeElapsedColumn(), transient=True,
                  console=Console(stderr=True)) as progress:
        bar = progress.add_task("importing", total=None)
        result = import_root(parsed, out, options, on_row=lambda: progress.advance(bar),
                             on_reject=lambda r: progress.console.print(f"warning: {r}", markup=False, soft_wrap=True,
                                                                          highlight=False, style="yellow"))
    counts = result.counts
    typer.echo(f"{out}: {sum(result.items.values())} items from {result.rows} rows "
               f"({', '.join(f'{k} {v}' for k, v in result.items.items())}); {len(result.rejected)} rejected; "
               f"{counts['global_pool']} test/val candidates, {counts['union_train']} train queries, "
               f"{len(counts['dataset_tasks'])} dataset-tasks")


@app.command("debian-sources")
def debian_sources(
    out: Annotated[Path, typer.Argument(help="Folder for the captions files (<out>/<source>/captions.jsonl) and "
                                        "rendered images; a rerun renders only what is missing.")],
    source: Annotated[list[str], typer.Option("--source", help="tuxstamps, openclipart, notoemoji (repeat; "
                                              "default: all three).")] = ["tuxstamps", "openclipart", "notoemoji"],  # noqa: B006
    max_per_source: Annotated[Optional[int], typer.Option("--max-per-source", min=1, help="Keep this many "
                                                          "items per source (a fixed sample by path hash).")] = None,
    install: Annotated[bool, typer.Option("--install/--no-install", help="apt-get install the packages "
                                          "that are missing (apt-get update first).")] = False,
) -> None:
    """Write `rare import` inputs from Debian's tuxpaint stamps, openclipart and Noto emoji (docs/realworld.md)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from rare.ingest import debian

    unknown = sorted(set(source) - set(debian.SOURCES))
    if unknown:
        raise typer.BadParameter(f"unknown source(s) {unknown}; known: {sorted(debian.SOURCES)}")
    missing = debian.missing_packages(source)
    if missing and install:
        debian.install(missing)
    console = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        for name in source:
            bar = progress.add_task(name, total=max_per_source)
            path = debian.write_source(name, out, max_per_source, on_item=lambda b=bar: progress.advance(b),
                                       on_skip=lambda m: console.print(f"warning: {m}", markup=False, soft_wrap=True))
            typer.echo(f"{name}={path}")


@app.command()
def score(
    run: Annotated[Path, typer.Option("--run", help="TREC run file: qid Q0 did rank score run_id.", **InFile)],
    qrels: Annotated[Path, typer.Option("--qrels", help="M-BEIR qrels: qid 0 did 1 task_id.", **InFile)],
    k: Annotated[list[int], typer.Option("--k", help="Cutoffs (repeat the option).", min=1)] = [1, 5, 10],  # noqa: B006
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 1 when there are warnings (no qid overlap, "
                                         "queries missing from the run, unknown dids).")] = False,
) -> None:
    """Score any run file by the M-BEIR rule: hit if ANY positive is in the top k, over the qrels' queries;
    also recall@k, MRR@10 and nDCG@10."""
    import json

    from rich.console import Console
    from rich.table import Table

    from rare.evaluate.metrics import score_run

    result = score_run(run, qrels, k)
    for warning in result.warnings:
        failures.print_warning(warning)
    if as_json:
        typer.echo(json.dumps({"queries": result.queries, **{f"R@{c}": round(v, 4) for c, v in result.rates.items()},
                               **{m: round(v, 4) for m, v in result.more.items()}}))
    else:
        table = Table(title=f"{run.name} ({result.queries} queries; R@k is M-BEIR's hit rate, recall@k the share "
                            "of positives found)")
        values = {f"R@{c}": v for c, v in result.rates.items()} | result.more
        for name in values:
            table.add_column(name, justify="right")
        table.add_row(*(f"{v:.2f}" for v in values.values()))
        Console().print(table)
    if strict and result.warnings:
        failures.print_error(f"{run}: {len(result.warnings)} warning(s) under --strict")
        raise typer.Exit(code=1)


# -- serve ----------------------------------------------------------------------------------------
def _variants(values: list[str]) -> list[str]:
    """typer has no list-of-choices option type: the same parse-time check, by hand."""
    for value in values:
        if value not in VARIANTS:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(map(repr, VARIANTS))}")
    return values


@app.command()
def serve(
    variant: Annotated[list[str], typer.Option("--variant", callback=_variants, help="Variant to serve (repeat for two side by side; "
                                               "default: none and both).")] = ["none", "both"],  # noqa: B006
    models: Annotated[Path, typer.Option("--models", help="Directory of exports (<models>/<variant>).")] = Path("models"),
    data: DataOpt = Path("data/raw"),
    corpus_enhanced: CorpusEnhOpt = Path("data/enhanced/corpus"),
    queries_enhanced: QueriesEnhOpt = Path("data/enhanced/queries"),
    params_file: ParamsOpt = Path("params.yaml"),
    host: Annotated[str, typer.Option("--host", help="Interface to bind (another than 127.0.0.1 exposes it).")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="TCP port to listen on (checked before "
                                      "anything loads: a busy one fails at once).")] = 8000,
    torch_threads: Annotated[int, typer.Option("--torch-threads", help="Threads of each model's batched forward "
                                               "pass (one per served variant runs at a time).")] = 1,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Server processes, each with the whole index "
                                         "(its embeddings memory-mapped, so shared): one per core.")] = 1,
) -> None:
    """Search the trained indexes (the evaluation's cached embeddings) from a web page and a JSON API."""
    check_section("evaluate", params_file)
    from rare.servers import port_free

    if not port_free(port, host):
        raise ValueError(f"--port {port}: {host}:{port} is already in use (another `rare serve`?); pick another port")
    import torch
    import uvicorn

    torch.set_num_threads(torch_threads)

    from rare.serve import ServiceSpec
    from rare.serve.app import create_app

    # C parser and loop, no access log: on 2 cores the HTTP layer shares the CPU with the forward passes.
    options = {"host": host, "port": port, "log_level": "warning", "http": "httptools", "loop": "uvloop",
               "access_log": False}
    spec = ServiceSpec(variants=variant, models=models, data=data, corpus_enhanced=corpus_enhanced,
                       queries_enhanced=queries_enhanced, params_file=params_file, torch_threads=torch_threads)
    # Built here also with workers, so that bad input fails in one line before any worker starts.
    service = spec.build()
    if workers > 1:  # uvicorn starts the workers; each builds the service from the environment
        spec.to_env()
        typer.echo(f"serving {', '.join(variant)} on http://{host}:{port} with {workers} workers (API docs: /docs)")
        uvicorn.run("rare.serve:app_from_environment", factory=True, workers=workers, **options)
        return
    typer.echo(f"serving {', '.join(variant)} on http://{host}:{port} (API docs: /docs)")
    uvicorn.run(create_app(service), **options)


def run_cli() -> None:
    """The ``rare`` entry point."""
    app()


if __name__ == "__main__":
    run_cli()

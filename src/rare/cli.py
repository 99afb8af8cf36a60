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


# -- data ---------------------------------------------------------------------------------------
@app.command()
def data(
    out: Annotated[Path, typer.Argument(help="Where to write the M-BEIR-layout root (replaced if it exists).")],
    params_file: ParamsOpt = Path("params.yaml"),
) -> None:
    """Generate the embedded benchmark (params `data:` section: preset, seed, sizes) into OUT."""
    from rare.config import ConfigError
    from rare.data.errors import DataError

    try:
        from flows.data import data_flow

        data_flow(out, params_file)
    except (DataError, ConfigError, ValueError, OSError) as exc:
        _fail(exc)


# -- enhance ----------------------------------------------------------------------------------
EnhanceOutOpt = Annotated[Path, typer.Option("--out", help="Output folder: the input files mirrored with an "
                                             "'enhanced' block per record, plus summary and failure reports.")]
MetricsOpt = Annotated[Optional[Path], typer.Option("--metrics", help="Also write the summary here (a DVC metric "
                                                    "cannot live inside the stage's output folder).")]


def _enhance(side: str, data: Path, out: Path, params_file: Path, metrics: Optional[Path]) -> None:
    from rare.config import ConfigError
    from rare.data.errors import DataError

    try:
        from flows.enhance import enhance_flow

        enhance_flow(side, data, out, params_file, metrics)
    except (DataError, ConfigError, ValueError) as exc:
        _fail(exc)


@enhance_app.command("corpus")
def enhance_corpus(data: DataOpt, out: EnhanceOutOpt, params_file: ParamsOpt = Path("params.yaml"),
                   metrics: MetricsOpt = None) -> None:
    """Caption image-only candidates and add visual context to image+text ones (every pool file)."""
    _enhance("corpus", data, out, params_file, metrics)


@enhance_app.command("queries")
def enhance_queries(data: DataOpt, out: EnhanceOutOpt, params_file: ParamsOpt = Path("params.yaml"),
                    metrics: MetricsOpt = None) -> None:
    """Caption image queries, name the subject of image questions, condense modification requests."""
    _enhance("queries", data, out, params_file, metrics)


# -- train ----------------------------------------------------------------------------------------
@app.command()
def train(
    variant: Annotated[str, typer.Argument(help="Ablation variant: none | corpus | query | both.")],
    data: DataOpt,
    out: Annotated[Path, typer.Option("--out", help="Export directory: safetensors weights, configs, tokenizer, "
                                      "meta.json (replaced atomically).")],
    corpus_enhanced: CorpusEnhOpt = None,
    queries_enhanced: QueriesEnhOpt = None,
    params_file: ParamsOpt = Path("params.yaml"),
    metrics: Annotated[Optional[Path], typer.Option("--metrics", help="Also write training figures (wall time, "
                                                    "steps, val loss) here, for DVC.")] = None,
) -> None:
    """Train the retriever for one variant (params `train:`); resumes from its last checkpoint after a kill."""
    from rare.config import ConfigError
    from rare.data.errors import DataError

    try:
        from flows.train import train_entry

        train_entry(variant, data, out, corpus_enhanced, queries_enhanced, params_file, metrics)
    except (DataError, ConfigError, ValueError, OSError) as exc:
        _fail(exc)


# --- evaluate, score, report (evaluation and report stages) ---------------------------------------
@app.command()
def evaluate(
    name: Annotated[str, typer.Argument(help="Evaluation name, e.g. none, corpus, infer-corpus.")],
    model: Annotated[Path, typer.Option("--model", help="Retriever directory exported by `rare train`.")],
    inputs: Annotated[str, typer.Option("--inputs", help="Input variant: none|corpus|query|both.")],
    data: DataOpt,
    out: Annotated[Path, typer.Option("--out", help="Output directory (metrics.json, info.json, runs/).")],
    corpus_enhanced: CorpusEnhOpt = None,
    queries_enhanced: QueriesEnhOpt = None,
    params_file: ParamsOpt = Path("params.yaml"),
) -> None:
    """Evaluate one model on one input variant by the M-BEIR protocol (local and global pools)."""
    try:
        from flows.evaluate import evaluate_flow

        metrics = evaluate_flow(name, model, inputs, data, out, corpus_enhanced, queries_enhanced, params_file)
    except (ValueError, OSError) as exc:
        _fail(exc)
    typer.echo(f"{name}: M-BEIR score " + ", ".join(f"{p} {v:.2f}" for p, v in metrics["score"].items()))


@app.command()
def score(
    run: Annotated[Path, typer.Option("--run", help="TREC run file: qid Q0 did rank score run_id.")],
    qrels: Annotated[Path, typer.Option("--qrels", help="M-BEIR qrels: qid 0 did 1 task_id.")],
    k: Annotated[list[int], typer.Option("--k", help="Cutoffs (repeat the option).")] = [1, 5, 10],  # noqa: B006
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Score any run file by the M-BEIR rule: hit if ANY positive is in the top k, over the qrels' queries."""
    import json

    from rich.console import Console
    from rich.table import Table

    from rare.evaluate.metrics import score_run

    try:
        rates, n = score_run(run, qrels, k)
    except (ValueError, OSError) as exc:
        _fail(exc)
    if as_json:
        typer.echo(json.dumps({"queries": n, **{f"R@{c}": round(v, 4) for c, v in rates.items()}}))
        return
    table = Table(title=f"{run.name} ({n} queries)")
    for c in rates:
        table.add_column(f"R@{c}", justify="right")
    table.add_row(*(f"{v:.2f}" for v in rates.values()))
    Console().print(table)


@app.command()
def report(
    evals: Annotated[Path, typer.Option("--evals", help="Directory of evaluations (<evals>/<name>/metrics.json).")],
    out: Annotated[Path, typer.Option("--out", help="Report directory.")],
    data: DataOpt,
    corpus_enhanced: CorpusEnhOpt = None,
    queries_enhanced: QueriesEnhOpt = None,
    params_file: ParamsOpt = Path("params.yaml"),
) -> None:
    """Ablation table, bar chart, qualitative gallery and the paper's findings, logged to the parent MLflow run."""
    try:
        from flows.report import report_flow

        path = report_flow(evals, out, data, corpus_enhanced, queries_enhanced, params_file)
    except (ValueError, OSError) as exc:
        _fail(exc)
    typer.echo(f"report: {path}")


# -- serve ----------------------------------------------------------------------------------------
@app.command()
def serve(
    variant: Annotated[list[str], typer.Option("--variant", help="Variant to serve (repeat for two side by side; "
                                               "default: none and both).")] = ["none", "both"],  # noqa: B006
    models: Annotated[Path, typer.Option("--models", help="Directory of exports (<models>/<variant>).")] = Path("models"),
    data: DataOpt = Path("data/raw"),
    corpus_enhanced: CorpusEnhOpt = Path("data/enhanced/corpus"),
    queries_enhanced: QueriesEnhOpt = Path("data/enhanced/queries"),
    params_file: ParamsOpt = Path("params.yaml"),
    host: Annotated[str, typer.Option("--host", help="Interface to bind (another than 127.0.0.1 exposes it).")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 8000,
    torch_threads: Annotated[int, typer.Option("--torch-threads", help="Threads of each model's batched forward "
                                               "pass (one per served variant runs at a time).")] = 1,
) -> None:
    """Search the trained indexes (the evaluation's cached embeddings) from a web page and a JSON API."""
    from rare.config import ConfigError
    from rare.data.errors import DataError

    try:
        import torch
        import uvicorn

        torch.set_num_threads(torch_threads)

        from rare.serve import build_service
        from rare.serve.app import create_app

        service = build_service(variant, models, data, corpus_enhanced, queries_enhanced, params_file)
    except (DataError, ConfigError, ValueError, OSError) as exc:
        _fail(exc)
    typer.echo(f"serving {', '.join(variant)} on http://{host}:{port} (API docs: /docs)")
    uvicorn.run(create_app(service), host=host, port=port, log_level="warning")


def run_cli() -> None:
    """Entry point that turns library errors into one clear line instead of a traceback."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    run_cli()

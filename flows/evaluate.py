"""Prefect flow of one evaluation (one row of the ablation matrix); the work is in ``rare.evaluate.stage``."""

from rare import runtime

runtime.configure()

from pathlib import Path  # noqa: E402

from prefect import flow  # noqa: E402

from rare.config import load_section  # noqa: E402


@flow(name="evaluate", flow_run_name="evaluate-{name}", log_prints=True)
def evaluate_flow(name: str, model: Path, inputs: str, data: Path, out: Path, corpus_enhanced: Path | None = None,
                  queries_enhanced: Path | None = None, params_file: Path = Path("params.yaml")) -> dict:
    """Evaluate the retriever in ``model`` on the ``inputs`` variant; writes ``out`` and returns its metrics."""
    from rare.evaluate.stage import evaluate, resolve_device
    from rare.model import load_retriever

    params = load_section("evaluate", params_file)
    tracking = load_section("tracking", params_file)
    retriever = load_retriever(model, device=resolve_device(params.device))
    return evaluate(name, retriever, inputs, Path(data), Path(out), params, corpus_enhanced, queries_enhanced,
                    tracking=tracking, model=Path(model))

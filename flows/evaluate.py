"""Prefect flow of one evaluation (one row of the ablation matrix); the work is in ``rare.evaluate.stage``."""

from rare import runtime

runtime.configure()

from pathlib import Path  # noqa: E402

from prefect import flow, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from flows import transient  # noqa: E402
from rare.config import load_section  # noqa: E402


@task(name="evaluate", task_run_name="evaluate-{name}-on-{inputs}", cache_policy=NO_CACHE, retries=1,
      retry_delay_seconds=5, retry_condition_fn=transient)
def evaluate_task(name: str, model: Path, inputs: str, data: Path, out: Path, corpus_enhanced: Path | None,
                  queries_enhanced: Path | None, params_file: Path) -> dict:
    """A retry is cheap: embeddings are cached by shard, so it resumes where the failure struck."""
    from rare.evaluate.stage import evaluate, resolve_device
    from rare.model import load_retriever

    params = load_section("evaluate", params_file)
    tracking = load_section("tracking", params_file)
    retriever = load_retriever(model, device=resolve_device(params.device))
    return evaluate(name, retriever, inputs, Path(data), Path(out), params, corpus_enhanced, queries_enhanced,
                    tracking=tracking, model=Path(model))


@flow(name="evaluate", flow_run_name="evaluate-{name}", log_prints=True)
def evaluate_flow(name: str, model: Path, inputs: str, data: Path, out: Path, corpus_enhanced: Path | None = None,
                  queries_enhanced: Path | None = None, params_file: Path = Path("params.yaml")) -> dict:
    """Evaluate the retriever in ``model`` on the ``inputs`` variant; writes ``out`` and returns its metrics."""
    return evaluate_task(name, model, inputs, data, out, corpus_enhanced, queries_enhanced, params_file)

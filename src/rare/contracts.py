"""What one stage hands the next, typed once: the writer builds these, every reader reads these.

- ``RetrieverSpec``: a retriever export's ``retriever.json``, enough to rebuild and preprocess it.
- ``ModelMeta``: a retriever export's ``meta.json`` (train and zero_shot write it; evaluate and serve
  read it to feed the model the text it was trained on).
- ``EnhanceSummary``: ``enhance_summary.json`` of an enhanced side (the engine writes it; the stage's
  checks, printout, metrics and MLflow run read it).
- ``PretrainFigures``: what ``rare pretrain`` measured (its DVC metric, loss curve and timings).
- ``EvalInfo``: an evaluation's ``info.json``, what was evaluated and how (the report reads it).

The two summaries are TypedDicts because their readers also log them as they are (MLflow, JSON);
the files the next stage loads are pydantic models, so a damaged file is one clear error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, NotRequired, TypedDict

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from rare.data.input_error import DataError
from rare.data.views import TextMode

Regime = Literal["zero-shot", "trained", "inference-only"]  # how an evaluation's model met its inputs


class _Contract(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def read(cls, path: Path):  # noqa: ANN206  (the subclass)
        """The file at ``path``, or a DataError naming it and the first bad field."""
        try:
            return cls.model_validate_json(path.read_text(encoding="utf-8"))
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "file"
            raise DataError(path, None, f"{where}: {err['msg']}") from None


class TextModes(_Contract):
    corpus: TextMode = "replace"
    query: TextMode = "replace"


class TrainInputs(_Contract):
    data: str
    corpus_enhanced: str | None = None   # set only when the variant trains on enhanced candidates
    queries_enhanced: str | None = None  # set only when the variant trains on enhanced queries


class ModelMeta(_Contract):
    """``meta.json``: what shapes the model and how evaluation must feed it; never timings, so identical
    weights give an identical export. Fields a writer does not set stay out of the file."""

    variant: str = "none"                  # what it was trained on: none | corpus | query | both | zero-shot
    text_mode: TextModes = TextModes()     # one mode per side; evaluation builds texts the same way
    instruction_seed: int = 0              # which instruction each query gets; evaluation reuses it
    seed: int | None = None
    global_steps: int | None = None
    train_file: str | None = None
    global_batch: int | None = None
    samples: int | None = None
    train_loss: float | None = None
    train_losses: list[tuple[int, float]] | None = None  # (step, loss) every step
    val_loss: list[tuple[int, float]] | None = None      # (step, loss) at each validation
    inputs: TrainInputs | None = None

    @field_validator("text_mode", mode="before")
    @classmethod
    def _one_mode_for_both(cls, v: object) -> object:
        """Older exports hold one mode for both sides."""
        return {"corpus": v, "query": v} if isinstance(v, str) else v

    def to_json(self) -> dict:
        return self.model_dump(exclude_unset=True)


class RetrieverSpec(TypedDict):
    """``retriever.json``; a dict as written, because the model's fingerprint hashes exactly these keys."""

    format: int
    family: str                            # a key of rare.model.families.FAMILIES
    embed_dim: int
    text_pooling: str
    image_pooling: str
    image_size: int
    image_mean: list[float]
    image_std: list[float]
    max_text_len: int
    text_format: str                       # a key of rare.data.views.TEXT_FORMATS
    vlm: NotRequired[dict[str, Any]]       # family vlm: its switches and image settings (rare.model.vlm)


class EvalInfo(_Contract):
    """``eval/<name>/info.json``."""

    model_config = ConfigDict(extra="allow", frozen=True)  # plus the run's model, fingerprint, device, precision

    name: str
    inputs: str                        # which sides were enhanced at evaluation: none | corpus | query | both
    model_variant: str                 # what the model was trained on (its ModelMeta.variant)
    regime: Regime
    split: str
    data: str
    dataset_tasks: list[str]
    headline: dict[str, str] = {}      # dataset-task -> its headline metric, e.g. "R@5"


PoolScores = dict[str, dict[str, float]]  # dataset-task -> metric (R@k, "headline", "queries") -> value
# metrics.json: the M-BEIR score per pool, and every dataset-task's metrics per pool ("global" is a keyword).
EvalMetrics = TypedDict("EvalMetrics", {"score": dict[str, float], "local": PoolScores, "global": PoolScores},
                        total=False)


class StoredShard(TypedDict):
    """What one finished enhancement shard keeps beside its records: its counts and failures."""

    items: int
    by_op: dict[str, dict[str, int]]       # op -> status -> records
    causes: dict[str, int]                 # failure category -> records
    tokens_in: int
    tokens_out: int
    failures: list[dict[str, object]]      # {"index", "id", "op", "cause"} per failed record
    fingerprint: NotRequired[str]          # the engine's: a rebuilt item cache takes only its own shards
    tokens: NotRequired[list[list[int]]]   # [tokens_in, tokens_out] per record, for a rebuilt item cache
    cost_rows: NotRequired[list[list[object]]]  # [index, id, op, tokens_in, tokens_out, seconds, cached] per item


class EnhanceSummary(TypedDict):
    """One enhanced side, counted; deterministic (this run's throughput goes to the runtime figures)."""

    side: str                              # corpus | query (the side; "queries" names its command and folder)
    backend: str
    model: str
    prompt_version: str
    shard_size: int
    max_failure_rate: float
    items: int                             # every record read
    enhanceable: int                       # ok + failed: the records routed to an operation
    ok: int
    failed: int
    skipped: int                           # routed to "none": left as they are
    by_op: dict[str, dict[str, int]]       # op -> status -> records
    failures_by_cause: dict[str, int]
    tokens_in: int
    tokens_out: int
    files: dict[str, int]                  # file (relative to the root) -> records
    failure_rate: float                    # failed / enhanceable


class EnhanceRuntime(TypedDict):
    """One enhancement run's work (not part of the deterministic output): what was generated, reused, cached."""

    shards: int
    shards_reused: int
    generated: int
    cache_hits: int
    gen_tokens_in: int
    gen_tokens_out: int
    workers: int
    seconds: float
    items_per_s: float


class HoldoutRecall(TypedDict):
    """The pretrained tower on pairs it never trained on (percent)."""

    holdout_t2i_r5: float
    holdout_i2t_r1: float
    holdout_pairs: int
    holdout_captions: int


class PretrainFigures(HoldoutRecall):
    """What ``rare pretrain`` returns: held-out retrieval, the loss, and timings."""

    steps: int
    batch_size: int
    pairs: int
    captions: int
    loss_start: float
    loss_final: float
    loss: list[float]                      # every step
    temperature: float
    text_seconds: float
    fit_seconds: float
    pretrain_seconds: float

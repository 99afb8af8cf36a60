"""Enhancement stage parameters."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from rare.config.base import Section
from rare.config.ops import NEEDS_IMAGE, NEEDS_TEXT, Op

Modality = Literal["text", "image", "image,text"]


class StandinNoise(Section):
    """Noise knobs of the offline stand-in, to see how VLM quality moves retrieval."""

    drop_detail: float = Field(0.0, ge=0.0, le=1.0)      # each visual detail is left out with this probability
    wrong_attribute: float = Field(0.0, ge=0.0, le=1.0)  # each attribute is replaced by a wrong one
    fail_entity: float = Field(0.0, ge=0.0, le=1.0)      # an entity is described generically, not named


class RouteRule(Section):
    """One routing override. An item matches when every given field matches; the first match wins.

    ``modality`` is what the item actually carries (an ``image,text`` record with empty text
    counts as ``image``), so a rule can never send an item to an op it lacks the input for.
    """

    side: Literal["corpus", "query"]
    modality: Modality
    op: Op
    task_ids: list[int] | None = None     # queries only: the record's task_id
    dataset_ids: list[int] | None = None  # the id before ":" in qid / did
    question: bool | None = None          # True: questions only, False: non-questions only

    @model_validator(mode="after")
    def _check(self) -> RouteRule:
        if self.op in NEEDS_IMAGE and "image" not in self.modality:
            raise ValueError(f"op {self.op!r} needs an image but the rule matches modality {self.modality!r}")
        if self.op in NEEDS_TEXT and "text" not in self.modality:
            raise ValueError(f"op {self.op!r} needs text but the rule matches modality {self.modality!r}")
        if self.side == "corpus" and self.task_ids is not None:
            raise ValueError("task_ids only applies to queries (candidates carry no task id)")
        return self


class MaxNewTokens(Section):
    """Token caps per side, as in the released script; an output cut at the cap is a failure."""

    corpus: int = Field(512, ge=1)
    query: int = Field(128, ge=1)


class TransformersOptions(Section):
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"


class OpenAIOptions(Section):
    """An OpenAI-compatible server (``vllm serve``, SGLang, LMDeploy, TGI) that rare only calls over HTTP.

    None of these change what is generated, so none goes into the cache key; the served model's
    name (``enhance.model``), the seed and ``max_pixels`` do.
    """

    # One server, one per node, or one `--data-parallel-size N` server; requests are spread over them, a
    # retry moves on to the next URL after the one that failed, and a failing URL rests for its back-off.
    base_urls: list[str] = Field(["http://127.0.0.1:8000/v1"], min_length=1)
    api_key_env: str | None = None       # name of the environment variable holding the key (the key never goes here)
    max_concurrency: int = Field(64, ge=1)  # requests in flight per process
    timeout_s: float = Field(600.0, gt=0)   # the whole request, answer body included: a 512-token caption under load takes a while
    max_retries: int = Field(6, ge=0)       # on refused/reset connections, timeouts, 408/409/429/5xx, malformed bodies
    backoff_s: float = Field(1.0, ge=0)     # first back-off; doubled per retry, at most 60 s
    max_retry_after_s: float = Field(60.0, ge=0)  # a 429/503's Retry-After is honoured up to this
    image_format: Literal["png", "jpeg"] = "png"  # how the resized image travels (png: lossless)


class RayOptions(Section):
    """Optional scale-out: one actor per worker, each holding its own engine (one per GPU).

    ``num_workers: auto`` starts as many actors as the cluster can place (its GPUs, or its CPUs
    for CPU-only workers); an explicit number the cluster cannot place fails at start, naming both.
    """

    enabled: bool = False
    address: str | None = None  # None: start a local cluster; "auto": join the running one
    num_workers: int | Literal["auto"] = "auto"
    num_cpus_per_worker: float = Field(1.0, ge=0.0)
    num_gpus_per_worker: float = Field(0.0, ge=0.0)

    @field_validator("num_workers")
    @classmethod
    def _positive(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 1:
            raise ValueError("must be >= 1 or 'auto'")
        return v


class EnhanceParams(Section):
    backend: Literal["standin", "transformers", "openai"] = "standin"
    model: str = "standin"  # model id or local path; ignored by the stand-in
    prompt_version: str = "v1"
    shard_size: int = Field(1024, ge=1)  # records per shard: the unit of work, retry and resume
    batch_size: int = Field(32, ge=1)    # requests per backend.generate call
    max_failure_rate: float = Field(0.05, ge=0.0, le=1.0)
    seed: int = 0
    noise: StandinNoise = StandinNoise()
    # Resume state (item cache, finished shards) lives outside the stage's output, which
    # `dvc repro` deletes before rerunning a stage.
    cache_dir: str = ".cache/rare/enhance"
    # The item cache (SQLite, WAL) must sit on a node-local disk: SQLite's WAL does not work over a network
    # filesystem. null = inside cache_dir (one machine). On a cluster: cache_dir on shared storage (finished
    # shards, the source of truth), item_cache_dir on each node's local disk.
    item_cache_dir: str | None = None
    retries: int = Field(2, ge=0)  # Prefect retries of a shard whose backend raised
    max_new_tokens: MaxNewTokens = MaxNewTokens()
    max_pixels: int = Field(1_003_520, ge=1024)  # images are downscaled to at most this many pixels
    # Text put into a prompt is cut to this many characters (long wiki passages), so a prompt always
    # fits max_model_len; the record keeps its full text.
    max_text_chars: int = Field(4000, ge=16)
    routing: list[RouteRule] = []  # overrides, tried before the built-in table
    transformers: TransformersOptions = TransformersOptions()
    openai: OpenAIOptions = OpenAIOptions()
    ray: RayOptions = RayOptions()

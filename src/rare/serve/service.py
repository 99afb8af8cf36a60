"""What the API does, apart from HTTP: validate a query, enhance it, embed and search it per variant.

Typed contracts (pydantic) are the API's response bodies, so FastAPI documents them. Every refusal is a
``BadInput`` naming the request field and the cause; the HTTP layer turns it into a 4xx.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pydantic import BaseModel

from rare.data.images import ImageLoadError, open_image, resolve_image
from rare.data.records import Candidate, Enhanced, Query
from rare.data.views import query_text
from rare.mbeir import TASKS, DatasetTask, dataset_id_of
from rare.model import EncodeInput
from rare.serve.batch import MicroBatcher
from rare.serve.index import POOLS, Catalog, Variant
from rare.serve.live_enhance import LiveEnhancer


@dataclass(frozen=True)
class Limits:
    max_k: int = 100
    max_upload_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 16_000_000  # decoded pixels of an upload (a 10 MB PNG can decode to billions)


class BadInput(ValueError):
    """A refused request: ``field`` is the request field at fault, ``status`` the HTTP status to answer."""

    def __init__(self, field: str, cause: str, status: int = 422):
        super().__init__(f"{field}: {cause}")
        self.field, self.cause, self.status = field, cause, status


# ---------------------------------------------------------------------------------------- contracts
class CandidateOut(BaseModel):
    did: str
    modality: str
    text: str                    # the original text
    enhanced_text: str | None    # the enhancement stage's text, when it succeeded
    enhanced_status: str | None  # ok | failed | skipped | None (no enhanced mirror)
    image_url: str | None


class Hit(CandidateOut):
    rank: int
    score: float
    positive: bool               # one of the benchmark query's positives (qrels)


class Column(BaseModel):
    variant: str
    query_text: str              # exactly what this model embedded: instruction + original or enhanced text
    uses_enhanced_query: bool
    batch: int                   # queries embedded and searched together with this one (micro-batching)
    embed_ms: float              # that batch's forward pass
    search_ms: float             # that batch's bare exact search
    hits: list[Hit]


class EnhancementOut(BaseModel):
    op: str
    status: str                  # ok | failed | skipped
    text: str | None             # the enhanced text when status is ok
    cause: str | None
    backend: str
    note: str                    # what happened, in words (shown on the page)


class QueryOut(BaseModel):
    qid: str | None
    task: str
    query_modality: str
    candidate_modality: str
    text: str                    # the original query text
    image_url: str | None
    positives: list[str]


class SearchOut(BaseModel):
    query: QueryOut
    instruction: str
    enhancement: EnhancementOut
    pool: str
    k: int
    results: list[Column]
    total_ms: float


class TaskOut(BaseModel):
    name: str
    dataset: str
    task_id: int
    query_modality: str
    candidate_modality: str


class InfoOut(BaseModel):
    variants: list[str]
    tasks: list[TaskOut]
    pools: list[str]
    datasets: list[str]
    enhancement_backend: str
    max_k: int
    max_upload_bytes: int
    max_pixels: int


@dataclass(frozen=True)
class Job:
    """One query's work for one variant's batcher: what that model embeds, and where it searches."""

    input: EncodeInput
    pool: str
    task: str
    k: int


@dataclass(frozen=True)
class Ranked:
    scores: np.ndarray
    dids: np.ndarray
    batch: int
    embed_ms: float
    search_ms: float


@dataclass
class Pending:
    """A query whose jobs wait in the batchers: ``result`` blocks for them, ``done`` awaits them (the HTTP
    layer, so that no thread is held while a batch runs)."""

    futures: dict[str, Future[Ranked]]  # variant name -> its batcher's answer
    answer: Callable[[dict[str, Ranked]], SearchOut]

    def result(self) -> SearchOut:
        return self.answer({name: f.result() for name, f in self.futures.items()})

    async def done(self) -> SearchOut:
        await asyncio.wait([asyncio.wrap_future(f) for f in self.futures.values()])
        return self.result()


@dataclass
class QueryImage:
    """A decoded query image and the file it came from (an upload spooled to a temp file, or the data root)."""

    image: Image.Image
    path: Path


# ---------------------------------------------------------------------------------------- service
class Service:
    def __init__(self, variants: dict[str, Variant], catalog: Catalog, enhancer: LiveEnhancer,
                 limits: Limits = Limits()):  # noqa: B008 - frozen dataclass
        self.variants, self.catalog, self.enhancer, self.limits = variants, catalog, enhancer, limits
        self.tasks = {dt.name: dt for dt in catalog.tasks}
        self.pools = [p for p in POOLS if p == "local" or all(v.global_pool for v in variants.values())]
        first = next(iter(variants.values()))
        self.instructions = first.plan.query_view.instructions
        self.instruction_seed = first.plan.query_view.instruction_seed
        # A batcher thread per variant: two models run their forward passes side by side.
        self.batchers = {name: MicroBatcher(functools.partial(_rank, v)) for name, v in variants.items()}

    def info(self) -> InfoOut:
        tasks = [TaskOut(name=dt.name, dataset=dt.dataset, task_id=dt.task_id, query_modality=TASKS[dt.task_id][0],
                         candidate_modality=TASKS[dt.task_id][1]) for dt in self.tasks.values()]
        return InfoOut(variants=list(self.variants), tasks=tasks, pools=self.pools,
                       datasets=sorted({dt.dataset for dt in self.tasks.values()}),
                       enhancement_backend=self.enhancer.backend.name, max_k=self.limits.max_k,
                       max_upload_bytes=self.limits.max_upload_bytes, max_pixels=self.limits.max_pixels)

    # -- lookups ----------------------------------------------------------------------------------
    def _candidate(self, did: str) -> Candidate:
        try:
            return self.catalog.candidates[did]
        except KeyError:
            raise BadInput("did", f"unknown candidate {did!r}", 404) from None

    def candidate(self, did: str) -> CandidateOut:
        return _candidate_out(self._candidate(did))

    def candidate_image(self, did: str) -> Path:
        """Only the pool's own image files, resolved under the data root (no '..', no symlinks out)."""
        cand = self._candidate(did)
        if not cand.img_path:
            raise BadInput("did", f"candidate {did!r} has no image", 404)
        return self._image_file(cand.img_path, "did")

    def _query(self, qid: str) -> Query:
        try:
            return self.catalog.queries[qid]
        except KeyError:
            raise BadInput("qid", f"unknown benchmark query {qid!r}", 404) from None

    def query_image(self, qid: str) -> Path:
        q = self._query(qid)
        if not q.img_path:
            raise BadInput("qid", f"query {qid!r} has no image", 404)
        return self._image_file(q.img_path, "qid")

    def _image_file(self, rel: str, field: str) -> Path:
        try:
            path = resolve_image(self.catalog.root.path, rel)
        except ImageLoadError as exc:
            raise BadInput(field, str(exc), 403) from None
        if not path.is_file():
            raise BadInput(field, f"image file {rel!r} is missing", 404)
        return path

    def random_query(self, dataset: str | None, seed: int | None) -> QueryOut:
        try:
            q = self.catalog.random_query(dataset or None, random.Random(seed))
        except KeyError:
            raise BadInput("dataset", f"unknown dataset {dataset!r}; served: "
                           f"{sorted({dt.dataset for dt in self.tasks.values()})}") from None
        return self._query_out(q.qid, self.tasks[self.catalog.task_of[q.qid]], q.txt, bool(q.img_path))

    def _query_out(self, qid: str | None, dt: DatasetTask, text: str, has_image: bool) -> QueryOut:
        qmod, cmod = TASKS[dt.task_id]
        image_url = (f"/queries/{qid}/image" if qid else None) if has_image else None
        return QueryOut(qid=qid, task=dt.name, query_modality=qmod, candidate_modality=cmod, text=text,
                        image_url=image_url, positives=sorted(self.catalog.positives.get(qid, ())) if qid else [])

    # -- search -----------------------------------------------------------------------------------
    def _check(self, k: int, pool: str, variants: list[str]) -> list[Variant]:
        if not 1 <= k <= self.limits.max_k:
            raise BadInput("k", f"must be between 1 and {self.limits.max_k}, got {k}")
        if pool not in self.pools:
            raise BadInput("pool", f"unknown pool {pool!r}; allowed: {self.pools}")
        unknown = [v for v in variants if v not in self.variants]
        if unknown:
            raise BadInput("variants", f"unknown variant {unknown[0]!r}; served: {list(self.variants)}")
        return [self.variants[v] for v in variants or self.variants]

    def _task(self, name: str) -> DatasetTask:
        try:
            return self.tasks[name]
        except KeyError:
            raise BadInput("task", f"unknown task {name!r}; served: {list(self.tasks)}") from None

    def search(self, **query: Any) -> SearchOut:
        """``submit``, then wait for the answer."""
        return self.submit(**query).result()

    def submit(self, *, text: str = "", image: QueryImage | None = None, task: str = "", qid: str = "",
               k: int = 10, pool: str = "local", variants: list[str] | None = None) -> Pending:
        """Check, enhance and queue a free query (text and/or image, with a task) or a benchmark query by qid,
        for each variant. The image is decoded already: after this, nothing reads its file."""
        t0 = time.perf_counter()
        chosen = self._check(k, pool, variants or [])
        if qid:
            q = self._query(qid)
            if text or image is not None:
                raise BadInput("qid", "a benchmark query brings its own text and image: send qid without them")
            dt = self.tasks[self.catalog.task_of[qid]]
            if task and task != dt.name:
                raise BadInput("task", f"query {qid} belongs to {dt.name}, not {task}")
            if q.img_path:
                path = self._image_file(q.img_path, "qid")
                image = QueryImage(open_image(path), path)
            text, src, qmod, ds_id = q.txt, q.src_content, q.modality, dataset_id_of(qid)
        else:
            dt, src = self._task(task), None
            _check_modality(dt, text, image)
            qmod, ds_id = TASKS[dt.task_id][0], dt.info.id
        cmod = TASKS[dt.task_id][1]
        instruction = self.instructions.choose(qid or f"free:{text}", ds_id, qmod, cmod, self.instruction_seed)
        enhanced = self.enhancer.enhance(text, image.path if image else None, dt.task_id, ds_id, src)
        record = Query(qid=qid or "free", txt=text, img_path=None, modality=qmod, task_id=dt.task_id, pos=[],
                       enhanced=enhanced)
        positives = self.catalog.positives.get(qid, set()) if qid else set()
        texts = {v.name: query_text(record, instruction, v.plan.query_view.use_enhanced, v.plan.query_view.mode)
                 for v in chosen}
        pil = image.image if image else None
        futures = {name: self.batchers[name].submit(Job(EncodeInput(t, pil), pool, dt.name, k))
                   for name, t in texts.items()}
        query = self._query_out(qid or None, dt, text, image is not None)
        enhancement = self._enhancement_out(enhanced)

        def answer(ranked: dict[str, Ranked]) -> SearchOut:
            columns = [self._column(v, texts[v.name], ranked[v.name], positives) for v in chosen]
            return SearchOut(query=query, instruction=instruction, enhancement=enhancement, pool=pool, k=k,
                             results=columns, total_ms=_ms(t0))

        return Pending(futures, answer)

    def _column(self, v: Variant, query_text: str, ranked: Ranked, positives: set[str]) -> Column:
        hits = [_candidate_out(self._candidate(str(did)), Hit, rank=r + 1, score=float(s), positive=did in positives)
                for r, (s, did) in enumerate(zip(ranked.scores, ranked.dids))]
        return Column(variant=v.name, query_text=query_text, uses_enhanced_query=v.plan.query_view.use_enhanced,
                      batch=ranked.batch, embed_ms=ranked.embed_ms, search_ms=ranked.search_ms, hits=hits)

    @staticmethod
    def _enhancement_out(e: Enhanced) -> EnhancementOut:
        notes = {"ok": "enhanced by the backend; the enhanced-query models read the enhanced text",
                 "skipped": f"no enhancement for this kind of query (op {e.op}): every model reads the original",
                 "failed": f"the backend could not enhance this query ({e.cause}): the original text is used"}
        return EnhancementOut(op=e.op, status=e.status, text=e.txt if e.ok else None, cause=e.cause,
                              backend=e.backend, note=notes[e.status])


def _rank(variant: Variant, jobs: list[Job]) -> list[Ranked]:
    """A batcher's work: one forward pass for every waiting query, one exact search per pool they search."""
    t0 = time.perf_counter()
    vectors = variant.embed([job.input for job in jobs])
    embed_ms = _ms(t0)
    by_pool: dict[tuple[str, str], list[int]] = {}
    for i, job in enumerate(jobs):
        by_pool.setdefault((job.pool, job.task), []).append(i)
    out: list[Ranked | None] = [None] * len(jobs)
    for (pool, task), rows in by_pool.items():
        t1 = time.perf_counter()
        # Exact search with a fixed tie-break: the top k of a larger k is the top k.
        scores, dids = variant.pool(pool, task).search(vectors[rows], max(jobs[i].k for i in rows))
        search_ms = _ms(t1)
        for n, i in enumerate(rows):
            k = jobs[i].k
            out[i] = Ranked(scores[n, :k], dids[n, :k], len(jobs), embed_ms, search_ms)
    return out  # type: ignore[return-value] - every job is in one pool group


def _check_modality(dt: DatasetTask, text: str, image: QueryImage | None) -> None:
    """The task fixes what a query carries, as in M-BEIR (text, image, or both)."""
    qmod = TASKS[dt.task_id][0]
    if "text" in qmod and not text.strip():
        raise BadInput("text", f"task {dt.name} takes {qmod} queries: the query text is empty")
    if "text" not in qmod and text.strip():
        raise BadInput("text", f"task {dt.name} takes image-only queries: leave the text empty")
    if "image" in qmod and image is None:
        raise BadInput("image", f"task {dt.name} takes {qmod} queries: upload an image")
    if "image" not in qmod and image is not None:
        raise BadInput("image", f"task {dt.name} takes text-only queries: no image")


def _candidate_out(c: Candidate, model: type[CandidateOut] = CandidateOut, **extra: object) -> CandidateOut:
    """The record as the API shows it; ``model`` and ``extra`` make it a ranked Hit."""
    e = c.enhanced
    return model(did=c.did, modality=c.modality, text=c.txt, enhanced_text=e.txt if e is not None and e.ok else None,
                 enhanced_status=e.status if e is not None else None,
                 image_url=f"/images/{c.did}" if c.img_path else None, **extra)


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000

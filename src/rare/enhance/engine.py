"""The enhancement engine: route, cache, generate and write one shard at a time.

Work is cut into shards of ``shard_size`` input lines. A finished shard is stored under the
cache directory as ``shards/<digest>.jsonl`` (+ ``.json`` stats), where the digest hashes the
shard's input bytes and everything that shapes the output; both files appear atomically, and then
their manifest (``.manifest.json``: sizes, sha256, row count), whose existence means "finished".
Before a stored shard is reused its sizes and its stats' hash are checked; its output is hashed while
assembly streams it into the published file (it is read then anyway). A shard that was truncated,
emptied or rewritten is discarded with a warning naming it and generated again (from the item cache,
so cheaply), never published. The final files under ``out`` are then concatenations of stored shards
in input order. Consequences:

- kill -9 anywhere, rerun: finished shards are reused, finished generations come from the item
  cache, and the output is byte-identical to an uninterrupted run;
- ``dvc repro`` may delete ``out``: the resume state lives elsewhere;
- memory holds one shard per worker, whatever the input size;
- the only files written under ``out`` are the mirrored inputs and the two reports;
- a damaged item cache is refilled from the finished shards (``rebuild_cache``): their records are
  keyed again by ``_address``, so a later run over another shard layout finds them there.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rare.atomic import atomic_write, remove_stale_temps
from rare.config.enhance import EnhanceParams, RouteRule
from rare.config.ops import NEEDS_IMAGE, NONE
from rare.contracts import EnhanceRuntime, EnhanceSummary, StoredShard
from rare.data.images import ImageLoadError, ImageRoot
from rare.data.input_error import DataError
from rare.data.layout import MBEIRRoot
from rare.data.records import Enhanced, dumps, loads_line, parse_candidate, parse_query
from rare.enhance.backends.interface import (
    Backend,
    BackendConfigError,
    BackendUnavailable,
    EnhanceRequest,
    EnhanceResult,
)
from rare.enhance.cache import Cache
from rare.enhance.checks import IMAGE_UNREADABLE, cause_category, judge
from rare.enhance.prompts import PromptSet
from rare.enhance.routing import Router
from rare.failures import print_warning
from rare.hashing import key_digest
from rare.manifest import ManifestError, read_manifest, verify, write_manifest
from rare.mbeir import dataset_id_of

FORMAT_VERSION = 1  # bump when the output layout of a shard changes
SIDES = {"corpus": "corpus", "queries": "query", "query": "query"}
SIDE_DIRS = {
    "corpus": ("cand_pool/local", "cand_pool/global"),
    "query": ("query/train", "query/val", "query/test", "query/union_train", "query/union_val"),
}
SUMMARY_FILE = "enhance_summary.json"
FAILURES_FILE = "enhance_failures.jsonl"
Progress = Callable[[int], None]


def side_of(side: str) -> str:
    try:
        return SIDES[side]
    except KeyError:
        raise ValueError(f"unknown side {side!r}; allowed: ['corpus', 'queries']") from None


def input_files(root: MBEIRRoot, side: str) -> list[str]:
    """Relative paths of every file the side mirrors, in a fixed order."""
    side = side_of(side)
    found = [f.relative_to(root.path).as_posix()
             for d in SIDE_DIRS[side] for f in sorted((root.path / d).glob("*.jsonl"))]
    if not found:
        raise DataError(root.path, None, f"no {side} files (*.jsonl) under {list(SIDE_DIRS[side])}")
    return found


@dataclass(frozen=True)
class Shard:
    rel: str          # input file, relative to the data root (the output keeps this path)
    index: int
    offset: int       # byte range of the shard's lines in the input file
    length: int
    first_line: int   # 1-based line number of its first line, for error messages
    lines: int
    digest: str       # hash of the input bytes + the engine fingerprint: the stored output's name

    @property
    def name(self) -> str:
        return f"{self.rel}#{self.index}"


def plan_shards(root: MBEIRRoot, files: list[str], shard_size: int, fingerprint: str) -> Iterator[Shard]:
    """One streaming pass over the inputs; a shard whose bytes and settings are unchanged keeps its digest."""
    for rel in files:
        with open(root.path / rel, "rb") as fh:
            index = offset = lines = 0
            start, start_line, hasher = 0, 1, hashlib.blake2b(fingerprint.encode(), digest_size=16)
            for raw in fh:
                hasher.update(raw)
                offset += len(raw)
                lines += 1
                if lines % shard_size == 0:
                    yield Shard(rel, index, start, offset - start, start_line, lines - start_line + 1,
                                hasher.hexdigest())
                    index, start, start_line = index + 1, offset, lines + 1
                    hasher = hashlib.blake2b(fingerprint.encode(), digest_size=16)
            if offset > start:
                yield Shard(rel, index, start, offset - start, start_line, lines - start_line + 1, hasher.hexdigest())


@dataclass(frozen=True)
class CostRecord:
    """What one enhanced item cost: the backend's token counts (the server's ``usage`` on openai, the model's
    tokenizer on transformers, whitespace words on the stand-in) and the generation seconds charged to it
    (its batch's wall time / batch size; 0 when an identical input was already generated or cached).

    Recorded when its shard is generated and stored with the shard (``ShardStats.cost_rows``), so a rerun
    that reuses the shard reports the same record (``reused``): costs are a property of the output, not of
    the run that happened to read it back."""

    file: str
    line: int
    id: str
    op: str
    tokens_in: int
    tokens_out: int
    seconds: float
    cached: bool          # its generation was charged elsewhere (an identical input, or the item cache)
    reused: bool = False  # read back from a shard stored by an earlier run: as recorded when generated

    def row(self, index: int) -> list[Any]:
        """The stored form, beside the shard: the file and line follow from the shard and ``index``."""
        return [index, self.id, self.op, self.tokens_in, self.tokens_out, self.seconds, self.cached]

    @classmethod
    def from_row(cls, shard: Shard, row: list[Any]) -> CostRecord:
        index, rid, op, tokens_in, tokens_out, seconds, cached = row
        return cls(shard.rel, shard.first_line + index, rid, op, tokens_in, tokens_out, seconds, cached, True)


@dataclass
class ShardStats:
    """What one shard produced. The first block is stored with the shard; the rest describes this run."""

    items: int = 0
    by_op: dict[str, dict[str, int]] = field(default_factory=dict)
    causes: dict[str, int] = field(default_factory=dict)
    tokens_in: int = 0
    tokens_out: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)  # {"index", "id", "op", "cause"}
    # What a rebuilt item cache needs and the output lacks: the engine that made the shard, each record's tokens
    fingerprint: str = ""
    tokens: list[list[int]] = field(default_factory=list)  # [tokens_in, tokens_out] per output line
    cost_rows: list[list[Any]] = field(default_factory=list)  # CostRecord.row per generated item

    shard: str = ""
    reused: bool = False    # the whole shard came from the store
    generated: int = 0      # requests the backend ran in this run
    cache_hits: int = 0     # distinct inputs served by the item cache
    gen_tokens_in: int = 0
    gen_tokens_out: int = 0
    worker: str = ""        # host:pid that processed the shard (spread over actors and nodes)
    costs: list[CostRecord] = field(default_factory=list)  # per item of the shard (stored as cost_rows)
    fresh: set[int] = field(default_factory=set)           # results generated here, not yet charged to an item

    STORED = ("items", "by_op", "causes", "tokens_in", "tokens_out", "failures", "fingerprint", "tokens", "cost_rows")

    def stored(self) -> StoredShard:
        return {k: getattr(self, k) for k in self.STORED}  # type: ignore[return-value]

    def count(self, op: str, status: str, cause: str | None) -> None:
        self.items += 1
        per_op = self.by_op.setdefault(op, {})
        per_op[status] = per_op.get(status, 0) + 1
        if cause is not None:
            category = cause_category(cause)
            self.causes[category] = self.causes.get(category, 0) + 1


@dataclass(frozen=True)
class EngineConfig:
    """Everything a worker (thread, process or Ray actor) needs to rebuild the same engine."""

    root: Path
    side: str                      # "corpus" | "query"
    cache_dir: Path                # finished shards: shared by every worker and node (the source of truth)
    item_cache: Path               # the SQLite item cache: node-local (SQLite's WAL needs one host)
    batch_size: int
    max_new_tokens: int
    max_text_chars: int
    prompt_version: str
    routing: tuple[RouteRule, ...]
    backend: str                   # identity of the backend: goes into every key
    model: str
    generation: dict[str, Any]     # decoding settings that change outputs (seed, noise, dtype, ...)
    reads_src_content: bool        # the stand-in reads annotations, so they are part of its input

    @classmethod
    def from_params(cls, params: EnhanceParams, root: MBEIRRoot, side: str,
                    identity: tuple[str, str] | None = None) -> EngineConfig:
        """``identity`` (name, model) is only given for a backend not built from params (tests, benches)."""
        from rare.enhance.backends import READS_SRC_CONTENT, backend_identity, generation_settings

        side = side_of(side)
        name, model = identity or backend_identity(params)
        return cls(  # absolute paths: Ray workers do not share the driver's working directory
            root=root.path.absolute(), side=side, cache_dir=Path(params.cache_dir).absolute(),
            item_cache=Path(params.item_cache_dir or params.cache_dir).absolute() / "cache.sqlite",
            batch_size=params.batch_size, max_new_tokens=getattr(params.max_new_tokens, side),
            max_text_chars=params.max_text_chars, prompt_version=params.prompt_version,
            routing=tuple(params.routing), backend=name, model=model, generation=generation_settings(params),
            reads_src_content=name in READS_SRC_CONTENT,
        )


@dataclass
class _Item:
    index: int               # line index inside the shard
    obj: dict[str, Any]      # the original record, written back verbatim
    rid: str
    op: str
    text: str                # what the prompt gets: the original text, cut to max_text_chars
    src: str | None
    image: str | None = None  # resolved path (a str: pathlib costs add up over 5.6M items)
    key: str | None = None
    cause: str | None = None  # set when the item failed before generation (unreadable image)


class Engine:
    def __init__(self, config: EngineConfig, make_backend: Callable[[], Backend]):
        self.config = config
        self.prompts = PromptSet.load(config.prompt_version)
        self.router = Router(config.routing)
        self.identity = key_digest(config.backend, config.model, config.generation, config.prompt_version)
        self.fingerprint = key_digest(FORMAT_VERSION, self.identity, config.side, config.max_new_tokens,
                                       config.max_text_chars, self.router.digest,
                                       {k: t.digest for k, t in self.prompts.templates.items()})
        self.cache = Cache(config.item_cache)
        self.store = config.cache_dir / "shards"
        self._make_backend = make_backend
        self._backend: Backend | None = None
        self._config_error: str | None = None  # a BackendConfigError's message, once one was raised
        self._turn = threading.Lock()  # held by the shard that is generating
        self._committer = ThreadPoolExecutor(1, thread_name_prefix="enhance-commit")
        self._images = ImageRoot(config.root)
        # Pools repeat images; one Path per image, not per request, also spares CPython's interned-string
        # table the churn of re-interning the same path parts (its rebuilds showed up as memory spikes).
        self._as_path = functools.lru_cache(maxsize=65536)(Path)
        if self.cache.needs_refill(self.fingerprint):
            self.rebuild_cache()

    # -- backend ------------------------------------------------------------------------------
    def _generate(self, requests: list[EnhanceRequest]) -> list[EnhanceResult]:
        if self._config_error is not None:  # every shard would hit it: no more requests until the user fixes it
            raise BackendConfigError(self._config_error, {})
        try:
            if self._backend is None:  # built on first use: a fully cached rerun never loads the model
                backend = self._make_backend()
                if (backend.name, backend.model) != (self.config.backend, self.config.model):
                    raise ValueError(f"backend reports {backend.name}/{backend.model}, expected "
                                     f"{self.config.backend}/{self.config.model}: cache keys would lie")
                self._backend = backend
            results = self._backend.generate(requests)
        except BackendConfigError as exc:
            self._config_error = str(exc)
            raise
        if len(results) != len(requests):
            raise RuntimeError(f"backend {self.config.backend} returned {len(results)} results "
                               f"for {len(requests)} requests")
        return results

    def close(self) -> None:
        self._committer.shutdown()
        if self._backend is not None:
            self._backend.close()
            self._backend = None
        self.cache.close()  # every thread's connection, the committer's included

    # -- one shard ----------------------------------------------------------------------------
    def plan(self, files: list[str], shard_size: int) -> list[Shard]:
        return list(plan_shards(MBEIRRoot(self.config.root), files, shard_size, self.fingerprint))

    def shard_paths(self, shard: Shard) -> tuple[Path, Path]:
        return self.store / f"{shard.digest}.jsonl", self.store / f"{shard.digest}.json"

    def manifest_path(self, shard: Shard) -> Path:
        return self.store / f"{shard.digest}.manifest.json"

    def _reusable(self, shard: Shard) -> dict[str, Any] | None:
        """The stored stats of a finished shard whose files match their manifest; None if it must be (re)made.

        Sizes, and the small stats file's hash: the output's hash is checked by assembly, which reads it."""
        out_path, stats_path = self.shard_paths(shard)
        manifest = self.manifest_path(shard)
        if not (manifest.exists() or out_path.exists()):
            return None
        try:
            verify(manifest, full={stats_path.name})
            return json.loads(stats_path.read_text())
        except (ManifestError, ValueError) as exc:
            self._discard(shard, str(exc))
        return None

    def _discard(self, shard: Shard, why: str) -> None:
        out_path, stats_path = self.shard_paths(shard)
        print_warning(f"enhancement shard {shard.name} ({out_path}): {why}; discarded, generating it again")
        for path in (self.manifest_path(shard), out_path, stats_path):
            path.unlink(missing_ok=True)

    def process(self, shard: Shard, progress: Progress | None = None) -> ShardStats:
        """Enhance one shard and store it; a shard already stored (and intact) is only read back."""
        out_path, stats_path = self.shard_paths(shard)
        worker = f"{socket.gethostname()}:{os.getpid()}"
        stored = self._reusable(shard)
        if stored is not None:
            stats = ShardStats(**stored, shard=shard.name, reused=True, worker=worker)
            stats.costs = [CostRecord.from_row(shard, row) for row in stats.cost_rows]  # none before cost_rows existed
            if progress:
                progress(stats.items)
        else:
            items = self._read(shard)
            stats = ShardStats(shard=shard.name, worker=worker, fingerprint=self.fingerprint)
            results = self._results(items, stats, progress)
            lines = [self._finish(item, results, stats, shard) for item in items]
            manifest = self.manifest_path(shard)
            for path in (stats_path, out_path, manifest):
                remove_stale_temps(path)
            atomic_write(stats_path, [json.dumps(stats.stored(), sort_keys=True).encode()])
            atomic_write(out_path, lines)
            write_manifest(manifest, [out_path, stats_path])  # last: its existence marks the shard finished
        return stats

    def _read(self, shard: Shard) -> list[_Item]:
        path = self.config.root / shard.rel
        with open(path, "rb") as fh:
            fh.seek(shard.offset)
            raw = fh.read(shard.length)
        return self._items(raw, path, shard.first_line)

    def _items(self, raw: bytes, path: Path, first_line: int) -> list[_Item]:
        """Parse and validate every record (bad input stops the stage, naming file and line), route and key it."""
        corpus = self.config.side == "corpus"
        parse = parse_candidate if corpus else parse_query
        items = []
        for i, line in enumerate(raw.splitlines()):
            if not line.strip():
                continue
            lineno = first_line + i
            obj = loads_line(line, path, lineno)
            try:
                rec = parse(obj)
            except ValueError as exc:
                raise DataError(path, lineno, str(exc)) from None
            rid = rec.did if corpus else rec.qid
            op = self.router.route(self.config.side, rec.txt, bool(rec.img_path),
                                   None if corpus else rec.task_id, dataset_id_of(rid))
            items.append(_Item(i, obj, rid, op, rec.txt[:self.config.max_text_chars], rec.src_content))
        self._address(items, "img_path" if corpus else "query_img_path")
        return items

    def _address(self, items: list[_Item], img_field: str) -> None:
        """Content-address every item that needs the backend; unreadable images fail here, before any call."""
        for item in items:
            if item.op in NEEDS_IMAGE:
                try:
                    item.image = self._images.resolve(item.obj[img_field])
                except ImageLoadError as exc:
                    item.cause = f"{IMAGE_UNREADABLE}: {exc}"
        digests = self.cache.image_digests([it.image for it in items if it.image is not None])
        for item in items:
            if item.op == NONE or item.cause is not None:
                continue
            image_digest = ""
            if item.image is not None:
                image_digest = digests.get(item.image, "")
                if not image_digest:
                    item.cause = f"{IMAGE_UNREADABLE}: {item.image}: file not found or unreadable"
                    continue
            template = self.prompts.template(item.op, self.config.side)
            item.key = key_digest(self.identity, template.name, template.digest, self.config.max_new_tokens,
                                  image_digest, item.text if template.uses_text else "",
                                  item.src if self.config.reads_src_content else None)

    def _request(self, item: _Item) -> EnhanceRequest:
        template = self.prompts.template(item.op, self.config.side)
        return EnhanceRequest(
            key=item.key or "", op=item.op, side=self.config.side, text=item.text,
            image=self._as_path(item.image) if item.image is not None else None,
            system=template.system, instruction=template.render(item.text),
            max_new_tokens=self.config.max_new_tokens,
            src_content=item.src if self.config.reads_src_content else None,
        )

    def _results(self, items: list[_Item], stats: ShardStats, progress: Progress | None) -> dict[str, EnhanceResult]:
        per_key = Counter(it.key for it in items if it.key is not None)
        results = self.cache.get_many(list(per_key))
        fresh = stats.fresh
        stats.cache_hits = len(results)
        if progress:
            progress(len(items) - sum(n for k, n in per_key.items() if k not in results))
        pending = [it for it in {it.key: it for it in items if it.key is not None}.values() if it.key not in results]
        if not pending:
            return results
        # One shard generates at a time, start to end, while the other reads and hashes its next shard:
        # the backend never idles waiting for both to finish their CPU work together.
        with self._turn:
            late = self.cache.get_many([it.key for it in pending])  # generated by another shard meanwhile
            results |= late
            stats.cache_hits += len(late)
            pending = [it for it in pending if it.key not in late]
            if progress and late:
                progress(sum(per_key[k] for k in late))
            size = self.config.batch_size
            commits = []
            for start in range(0, len(pending), size):
                requests = [self._request(it) for it in pending[start:start + size]]
                try:
                    t0 = time.perf_counter()
                    generated = self._generate(requests)
                    share = (time.perf_counter() - t0) / len(requests)
                    for res in generated:
                        res.seconds = res.seconds or share
                        fresh.add(id(res))
                except BackendUnavailable as exc:  # keep what did complete: a rerun must not redo it
                    for commit in commits:
                        commit.result()
                    self.cache.put_many((requests[i].key, res) for i, res in exc.done.items())
                    raise
                # Committed by a helper thread while the backend runs the next batch; all before the turn ends.
                done = list(zip((r.key for r in requests), generated))
                commits.append(self._committer.submit(self.cache.put_many, done))
                for req, res in zip(requests, generated):
                    results[req.key] = res
                    stats.gen_tokens_in += res.tokens_in
                    stats.gen_tokens_out += res.tokens_out
                stats.generated += len(requests)
                if progress:
                    progress(sum(per_key[r.key] for r in requests))
            for commit in commits:
                commit.result()
        return results

    def _finish(self, item: _Item, results: dict[str, EnhanceResult], stats: ShardStats, shard: Shard) -> bytes:
        cfg = self.config
        result = None
        if item.op == NONE:
            enhanced = Enhanced(NONE, "skipped", backend=cfg.backend, model=cfg.model, prompt_version=cfg.prompt_version)
        else:
            text, cause = None, item.cause
            if item.key is not None:
                result = results[item.key]
                stats.tokens_in += result.tokens_in
                stats.tokens_out += result.tokens_out
                text, cause = judge(result, cfg.max_new_tokens)
                charged = id(result) in stats.fresh
                stats.fresh.discard(id(result))  # an input repeated in the shard is generated (and paid) once
                cost = CostRecord(shard.rel, shard.first_line + item.index, item.rid, item.op, result.tokens_in,
                                  result.tokens_out, round(result.seconds, 6) if charged else 0.0, not charged)
                stats.costs.append(cost)
                stats.cost_rows.append(cost.row(item.index))
            status = "ok" if text is not None else "failed"
            enhanced = Enhanced(item.op, status, text, cause, cfg.backend, cfg.model, cfg.prompt_version)
            if cause is not None:
                stats.failures.append({"index": item.index, "id": item.rid, "op": item.op, "cause": cause})
        stats.tokens.append([result.tokens_in, result.tokens_out] if result is not None else [0, 0])
        stats.count(enhanced.op, enhanced.status, enhanced.cause)
        item.obj.pop("enhanced", None)  # re-enhancing an enhanced file replaces the block, never the original
        item.obj["enhanced"] = enhanced.to_json()
        return (dumps(item.obj) + "\n").encode()

    # -- a damaged item cache --------------------------------------------------------------------
    def rebuild_cache(self) -> None:
        """Refill a fresh item cache from every finished shard this engine would have written (same fingerprint)
        whose files match their manifest in full: each record is keyed again as ``_items`` keys a new one, and
        its stored text and tokens are what the key finds. Only ``ok`` records: a failed one keeps no text, so
        it is asked again. Shards from before this (no fingerprint) are skipped. Idempotent; marked done last."""
        shards = items = 0
        for manifest in sorted(self.store.glob("*.manifest.json")):
            out_path = manifest.with_name(manifest.name.removesuffix(".manifest.json") + ".jsonl")
            try:
                stored = json.loads(out_path.with_suffix(".json").read_text())
                if not isinstance(stored, dict) or stored.get("fingerprint") != self.fingerprint:
                    continue  # another side or other settings: its keys are not this engine's to compute
                verify(manifest, full=True)
            except (OSError, ManifestError, ValueError):
                continue  # not trusted: left for ``process`` to discard, with its warning, if a run needs it
            # The stored text already passed ``judge`` (whitespace collapsed); with "stop" it passes again unchanged.
            rows = [(item.key, EnhanceResult(text=item.obj["enhanced"]["txt"], tokens_in=tin, tokens_out=tout,
                                             finish_reason="stop"))
                    for item, (tin, tout) in zip(self._items(out_path.read_bytes(), out_path, 1), stored["tokens"])
                    if item.key is not None and item.obj["enhanced"]["status"] == "ok"]
            self.cache.put_many(rows)
            shards, items = shards + 1, items + len(rows)
        self.cache.refilled(self.fingerprint)
        print(f"enhance: item cache {self.config.item_cache} rebuilt from {shards} finished shard(s), "
              f"{items} item(s)", file=sys.stderr, flush=True)

    # -- the whole side -------------------------------------------------------------------------
    def assemble(self, files: list[str], shards: list[Shard], out: Path, shard_size: int,
                 max_failure_rate: float) -> EnhanceSummary:
        """Concatenate stored shards into ``out/<rel>`` (atomically, input order) and write both reports."""
        by_file: dict[str, list[Shard]] = {rel: [] for rel in files}
        for shard in shards:
            by_file[shard.rel].append(shard)
        summary: EnhanceSummary = {
            "side": self.config.side, "backend": self.config.backend, "model": self.config.model,
            "prompt_version": self.config.prompt_version, "shard_size": shard_size,
            "max_failure_rate": max_failure_rate,
            "items": 0, "enhanceable": 0, "ok": 0, "failed": 0, "skipped": 0,
            "by_op": {}, "failures_by_cause": {}, "tokens_in": 0, "tokens_out": 0, "files": {}, "failure_rate": 0.0,
        }
        for rel, parts in by_file.items():
            dst = out / rel
            remove_stale_temps(dst)
            self._write_verified(dst, parts)
            summary["files"][rel] = sum(_merge_counts(summary, self._stored(s)) for s in parts)
        summary["enhanceable"] = summary["ok"] + summary["failed"]
        if summary["enhanceable"]:
            summary["failure_rate"] = round(summary["failed"] / summary["enhanceable"], 6)
        failures_path, summary_path = out / FAILURES_FILE, out / SUMMARY_FILE
        remove_stale_temps(failures_path)
        atomic_write(failures_path, self._failure_lines(shards))
        remove_stale_temps(summary_path)
        atomic_write(summary_path, [(json.dumps(summary, indent=2, sort_keys=True) + "\n").encode()])
        return summary

    def _write_verified(self, dst: Path, parts: list[Shard]) -> None:
        """``dst`` = the shards' outputs in order, each hashed as it streams; one that no longer matches its
        manifest is discarded and generated again, and the file written again (the failed write never lands)."""
        for _ in range(len(parts) + 1):
            try:
                atomic_write(dst, (chunk for s in parts for chunk in self._verified(s)))
                return
            except _Changed as exc:
                self._discard(exc.shard, exc.why)
                self.process(exc.shard)
        raise OSError(f"{self.store}: stored shards keep changing while they are read; is the disk failing?")

    def _verified(self, shard: Shard) -> Iterator[bytes]:
        out_path = self.shard_paths(shard)[0]
        want = read_manifest(self.manifest_path(shard)).files.get(out_path.name)
        h, lines = hashlib.sha256(), 0
        for chunk in _concat(iter([out_path])):
            h.update(chunk)
            lines += chunk.count(b"\n")
            yield chunk
        if want is None or h.hexdigest() != want.sha256 or (want.rows is not None and lines != want.rows):
            raise _Changed(shard, f"{out_path}: content differs from the manifest")

    def _stored(self, shard: Shard) -> StoredShard:
        return json.loads(self.shard_paths(shard)[1].read_text())

    def _failure_lines(self, shards: list[Shard]) -> Iterator[bytes]:
        """Streamed shard by shard: even if every one of 5.6M items failed, memory stays flat."""
        for shard in shards:
            for f in self._stored(shard)["failures"]:
                row = {"file": shard.rel, "line": shard.first_line + f["index"], "id": f["id"], "op": f["op"],
                       "cause": f["cause"]}
                yield (dumps(row) + "\n").encode()


class _Changed(Exception):
    def __init__(self, shard: Shard, why: str):
        super().__init__(why)
        self.shard, self.why = shard, why


def _concat(paths: Iterator[Path]) -> Iterator[bytes]:
    for path in paths:
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                yield chunk


def _merge_counts(summary: EnhanceSummary, stored: StoredShard) -> int:
    """Add one stored shard's counts to the summary; returns its item count."""
    summary["items"] += stored["items"]
    summary["tokens_in"] += stored["tokens_in"]
    summary["tokens_out"] += stored["tokens_out"]
    for op, statuses in stored["by_op"].items():
        per_op = summary["by_op"].setdefault(op, {})
        for status, n in statuses.items():
            per_op[status] = per_op.get(status, 0) + n
            summary[status] += n  # type: ignore[literal-required]  # ok | failed | skipped
    for cause, n in stored["causes"].items():
        summary["failures_by_cause"][cause] = summary["failures_by_cause"].get(cause, 0) + n
    return stored["items"]


def merge_stats(all_stats: list[ShardStats], items: int, seconds: float) -> EnhanceRuntime:
    """This run's work (not part of the deterministic output): what was generated, reused, served from cache."""
    return {
        "shards": len(all_stats), "shards_reused": sum(s.reused for s in all_stats),
        "generated": sum(s.generated for s in all_stats), "cache_hits": sum(s.cache_hits for s in all_stats),
        "gen_tokens_in": sum(s.gen_tokens_in for s in all_stats),
        "gen_tokens_out": sum(s.gen_tokens_out for s in all_stats),
        "workers": len({s.worker for s in all_stats}), "seconds": round(seconds, 3),
        "items_per_s": round(items / seconds, 1) if seconds else 0.0,
    }

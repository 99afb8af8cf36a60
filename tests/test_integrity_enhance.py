"""Damaged enhancement caches are discarded and rebuilt, with one warning naming them, and the published
output is byte-identical to an intact run's (issue 25: a truncated shard published 179 lines of 321, an
emptied one an empty pool, both with exit 0; a damaged cache.sqlite gave DatabaseError tracebacks)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from rare.config.enhance import EnhanceParams
from rare.enhance.cache import Cache
from rare.enhance.side import enhance_side
from tests.fixtures.enhance import CUES, FAKE_IDENTITY, FakeBackend

SHARD_SIZE = 4


def run(root: Path, out: Path, cache: Path, shard_size: int = SHARD_SIZE,
        side: str = "corpus") -> tuple[FakeBackend, dict[str, bytes]]:
    backend = FakeBackend()
    params = EnhanceParams(cache_dir=str(cache), shard_size=shard_size, batch_size=3)
    enhance_side(params, root, out, side, make_backend=lambda: backend, identity=FAKE_IDENTITY, progress=False)
    return backend, {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def reference(tiny_root_session: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    """An intact run's cache (copied per test) and its published files."""
    base = tmp_path_factory.mktemp("reference")
    backend, files = run(tiny_root_session, base / "out", base / "cache")
    assert backend.calls > 0 and len(files) > 10
    return base / "cache", files


def biggest_shard(cache: Path) -> Path:
    """The stored shard output with the most lines (the damage must matter)."""
    return max((cache / "shards").glob("*.jsonl"), key=lambda p: (p.stat().st_size, p.name))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


SHARD_DAMAGES: dict[str, tuple[str, Callable[[Path], None]]] = {
    "output truncated": (".jsonl", _truncate),
    "output emptied": (".jsonl", lambda p: p.write_bytes(b"")),
    "output one line dropped": (".jsonl", lambda p: p.write_bytes(b"".join(p.read_bytes().splitlines(True)[1:]))),
    "output text edited": (".jsonl", lambda p: p.write_bytes(p.read_bytes().replace(b"refine", b"refinf", 1))),
    "stats garbage": (".json", lambda p: p.write_text("{garbage")),
    "stats removed": (".json", Path.unlink),
    "manifest removed": (".manifest.json", Path.unlink),
}


@pytest.mark.parametrize("name", sorted(SHARD_DAMAGES))
def test_a_damaged_shard_is_regenerated_and_the_output_is_identical(
        reference: tuple[Path, dict[str, bytes]], tiny_root_session: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], name: str) -> None:
    ref_cache, ref_files = reference
    cache = tmp_path / "cache"
    shutil.copytree(ref_cache, cache)
    shard = biggest_shard(cache)
    suffix, damage = SHARD_DAMAGES[name]
    damage(shard.with_name(shard.name.removesuffix(".jsonl") + suffix))
    capsys.readouterr()

    backend, files = run(tiny_root_session, tmp_path / "out", cache)

    assert files == ref_files  # byte for byte, the reports included
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and shard.name in warnings[0] and "generating it again" in warnings[0], warnings
    assert backend.calls == 0  # the item cache served the regenerated shard
    _, again = run(tiny_root_session, tmp_path / "out2", cache)  # and the repaired store is trusted again
    assert again == ref_files and "warning" not in capsys.readouterr().err


def _garbage(path: Path) -> None:
    path.write_bytes(b"this is not a database" * 100)


def _truncate_pages(path: Path) -> None:
    data = path.read_bytes()
    page = int.from_bytes(data[16:18], "big")
    assert len(data) >= 2 * page, "the fixture's cache must span several pages"
    path.write_bytes(data[: page])


ITEM_CACHE_DAMAGES: dict[str, Callable[[Path], None]] = {
    "garbage": _garbage,
    "truncated": _truncate_pages,
    "header zeroed": lambda p: p.write_bytes(b"\0" * 100 + p.read_bytes()[100:]),
}


@pytest.mark.parametrize("with_shards", [True, False], ids=["shards kept", "shards lost"])
@pytest.mark.parametrize("name", sorted(ITEM_CACHE_DAMAGES))
def test_a_damaged_item_cache_is_moved_aside_and_rebuilt(
        reference: tuple[Path, dict[str, bytes]], tiny_root_session: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], name: str, with_shards: bool) -> None:
    ref_cache, ref_files = reference
    cache = tmp_path / "cache"
    shutil.copytree(ref_cache, cache)
    for extra in cache.glob("cache.sqlite-*"):
        extra.unlink()
    ITEM_CACHE_DAMAGES[name](cache / "cache.sqlite")
    if not with_shards:
        shutil.rmtree(cache / "shards")
    capsys.readouterr()

    backend, files = run(tiny_root_session, tmp_path / "out", cache)

    assert files == ref_files
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "cache.sqlite: damaged item cache" in warnings[0], err
    assert "Traceback" not in err
    assert len(list(cache.glob("cache.sqlite.damaged-*"))) == 1  # kept for inspection
    assert (backend.calls == 0) == with_shards  # finished shards are the source of truth
    backend2, again = run(tiny_root_session, tmp_path / "out2", cache)  # the fresh cache holds what was generated
    assert again == ref_files and backend2.calls == 0


def test_a_rebuilt_item_cache_serves_a_new_shard_layout(
        tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The damaged cache is refilled from the finished shards, so a run over another shard layout asks the
    backend only for the items that failed (a failed record keeps no text to refill from)."""
    pool = tiny_root / "cand_pool/local/mbeir_webqa_task2_cand_pool.jsonl"  # refine: the text is in the key
    rows = [json.loads(line) for line in pool.read_text().splitlines()]
    rows[0]["txt"], rows[1]["txt"] = "passage REFUSE 0", "passage BROKEN 1"  # an answer judged failed; no answer
    pool.write_text("".join(json.dumps(r) + "\n" for r in rows))
    intact, want = run(tiny_root, tmp_path / "intact", tmp_path / "intact-cache", shard_size=3)
    failed = {r.key for r in intact.requests if any(cue in r.text for cue in CUES)}
    ok = {r.key for r in intact.requests} - failed
    assert len(failed) == 2 and len(ok) > 10
    cache = tmp_path / "cache"
    _, first = run(tiny_root, tmp_path / "first", cache)
    for extra in cache.glob("cache.sqlite-*"):
        extra.unlink()
    _garbage(cache / "cache.sqlite")
    capsys.readouterr()

    backend, files = run(tiny_root, tmp_path / "out", cache)  # the same layout: every shard reused

    assert files == first and backend.calls == 0
    err = capsys.readouterr().err
    assert "rebuilt from the finished shards" in err and "Traceback" not in err, err
    assert len((cache / "cache.sqlite.refill").read_text().split()) == 1  # this engine is done
    refilled = Cache(cache / "cache.sqlite")
    try:
        assert set(refilled.get_many(sorted(ok | failed))) == ok  # every ok item, no failed one
    finally:
        refilled.close()

    backend, files = run(tiny_root, tmp_path / "out2", cache, shard_size=3)  # a new layout

    assert files == want  # byte for byte, the reports (token counts, failures) included
    assert {r.key for r in backend.requests} == failed  # none of the ok items reached the backend


def test_a_kill_during_the_rebuild_leaves_the_marker_and_the_next_run_refills(
        reference: tuple[Path, dict[str, bytes]], tiny_root_session: Path, tmp_path: Path) -> None:
    """An engine is marked done last: an empty cache beside an empty marker is refilled by the next run."""
    cache = tmp_path / "cache"
    shutil.copytree(reference[0], cache)
    for extra in cache.glob("cache.sqlite*"):
        extra.unlink()
    (cache / "cache.sqlite.refill").write_text("")  # what a kill between moving aside and refilling leaves

    backend, _ = run(tiny_root_session, tmp_path / "out", cache, shard_size=3)  # another layout

    assert backend.calls == 0  # without the refill an empty cache over a new layout generates every item
    assert len((cache / "cache.sqlite.refill").read_text().split()) == 1


def test_each_side_refills_the_shared_item_cache_from_its_own_shards(tiny_root_session: Path, tmp_path: Path) -> None:
    """Keys depend on the engine's settings (the side among them): the side that runs first after the damage
    must not take the other's turn, and neither may key the other's records."""
    cache = tmp_path / "cache"
    for side in ("corpus", "queries"):
        assert run(tiny_root_session, tmp_path / f"{side}-0", cache, side=side)[0].calls > 0
    _garbage(cache / "cache.sqlite")
    for side in ("queries", "corpus"):  # the old layout: shards reused, each side refills in turn
        assert run(tiny_root_session, tmp_path / f"{side}-1", cache, side=side)[0].calls == 0
    assert len((cache / "cache.sqlite.refill").read_text().split()) == 2
    for side in ("corpus", "queries"):  # a new layout: every item from the refilled cache
        assert run(tiny_root_session, tmp_path / f"{side}-2", cache, shard_size=3, side=side)[0].calls == 0

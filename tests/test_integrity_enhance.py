"""Damaged enhancement caches are discarded and rebuilt, with one warning naming them, and the published
output is byte-identical to an intact run's (issue 25: a truncated shard published 179 lines of 321, an
emptied one an empty pool, both with exit 0; a damaged cache.sqlite gave DatabaseError tracebacks)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from rare.config.enhance import EnhanceParams
from rare.enhance.run import enhance_side
from tests.fixtures.enhance import FAKE_IDENTITY, FakeBackend

SHARD_SIZE = 4


def run(root: Path, out: Path, cache: Path) -> tuple[FakeBackend, dict[str, bytes]]:
    backend = FakeBackend()
    params = EnhanceParams(cache_dir=str(cache), shard_size=SHARD_SIZE, batch_size=3)
    enhance_side(params, root, out, "corpus", make_backend=lambda: backend, identity=FAKE_IDENTITY, progress=False)
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

"""kill -9 at any point, then rerun: nothing lost, nothing finished regenerated, bytes identical.

Each case runs the engine in a subprocess that SIGKILLs itself at a chosen point (inside a
backend call, halfway through writing a stored shard, halfway through writing an output file) or
is killed from outside after a delay, then reruns it to completion and compares every output byte
with an uninterrupted run.
"""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = """
import os, signal, sys
from pathlib import Path
from rare import runtime
runtime.configure()
import rare.enhance.engine as engine
from rare.config.enhance import EnhanceParams
from rare.enhance.side import enhance_side
from tests.fixtures.enhance import FAKE_IDENTITY, FakeBackend

root, out, cache, log, die_on_call, die_on_write, delay = sys.argv[1:]
if die_on_write:  # "<path part>:<k>": SIGKILL halfway through the k-th atomic write whose path contains it
    part, k = die_on_write.split(":")
    seen, real = [0], engine.atomic_write
    def dying(chunks):
        for i, chunk in enumerate(chunks):
            yield chunk[: len(chunk) // 2 + 1]
            os.kill(os.getpid(), signal.SIGKILL)
    def write(path, chunks):
        if part in str(path):
            seen[0] += 1
            if seen[0] == int(k):
                chunks = dying(list(chunks) or [b"x"])
        return real(path, chunks)
    engine.atomic_write = write
backend = FakeBackend(log=Path(log), die_on_call=int(die_on_call) or None, delay=float(delay))
params = EnhanceParams(cache_dir=cache, shard_size=3, batch_size=1)
enhance_side(params, Path(root), Path(out), "queries", make_backend=lambda: backend, identity=FAKE_IDENTITY,
             progress=False)
"""


def launch(root, out, cache, log, die_on_call=0, die_on_write="", delay=0.0) -> subprocess.Popen:
    args = [sys.executable, "-c", SCRIPT, str(root), str(out), str(cache), str(log), str(die_on_call), die_on_write,
            str(delay)]
    return subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen) -> int:
    output, _ = proc.communicate(timeout=120)
    if proc.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(output.decode())
    return proc.returncode


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def keys(log: Path) -> list[str]:
    return [line.split()[0] for line in log.read_text().splitlines()] if log.exists() else []


def committed(cache: Path) -> set[str]:
    db = cache / "cache.sqlite"
    if not db.exists():
        return set()
    with sqlite3.connect(db) as conn:
        return {k for (k,) in conn.execute("SELECT key FROM results")}


@pytest.fixture(scope="module")
def reference(tiny_root_session, tmp_path_factory):
    base = tmp_path_factory.mktemp("reference")
    assert finish(launch(tiny_root_session, base / "out", base / "cache", base / "log")) == 0
    generated = keys(base / "log")
    assert len(generated) == len(set(generated)) > 10
    return tree(base / "out"), set(generated)


@pytest.mark.slow
@pytest.mark.parametrize("kill", [
    {"die_on_call": 1},                 # before anything was generated
    {"die_on_call": 7},                 # mid-generation
    {"die_on_write": "shards:1"},       # halfway through the first stored shard's stats file
    {"die_on_write": "shards:6"},       # halfway through a stored shard's output
    {"die_on_write": "/.out.tmp-:4"},   # halfway through assembling an output file (staged beside out)
    {"die_on_write": "enhance_summary"},  # while writing the last report
    {"after": 0.4, "delay": 0.03},      # from outside, wherever it happens to be
    {"after": 0.9, "delay": 0.03},
])
def test_kill_9_then_rerun_loses_nothing_and_redoes_nothing_finished(tiny_root_session, tmp_path, reference, kill):
    expected_tree, expected_keys = reference
    out, cache, log1, log2 = tmp_path / "out", tmp_path / "cache", tmp_path / "log1", tmp_path / "log2"
    die_on_write = kill.get("die_on_write", "")
    if die_on_write and ":" not in die_on_write:
        die_on_write += ":1"
    proc = launch(tiny_root_session, out, cache, log1, kill.get("die_on_call", 0), die_on_write, kill.get("delay", 0.0))
    if "after" in kill:
        time.sleep(kill["after"])
        proc.send_signal(signal.SIGKILL)
    code = finish(proc)
    if "after" not in kill:
        assert code == -signal.SIGKILL  # the scripted kill really happened
    finished = committed(cache)

    assert finish(launch(tiny_root_session, out, cache, log2)) == 0
    redone = keys(log2)
    assert not set(redone) & finished                  # nothing committed before the kill was generated again
    assert set(redone) | finished == expected_keys     # and nothing was lost
    assert len(redone) == len(set(redone))
    assert tree(out) == expected_tree                  # byte for byte, and no leftover temp files
    assert not [p for p in (cache / "shards").iterdir() if ".tmp-" in p.name and not _alive_writer(p)]


def _alive_writer(path: Path) -> bool:
    pid = int(path.name.rsplit(".tmp-", 1)[1].split("-")[0])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True

"""Property test of `rare validate`: one random mutation of a valid root (a byte, a field, a line) is
either accepted or reported as an error that names the mutated file; it never crashes."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from rare.validate import validate_root
from tests.fixtures.tiny_root import make_tiny_root

MUTATIONS = 300
ODD_VALUES = [None, True, False, 0, 1, -1, 2**70, 1.5, float("nan"), "", " ", "x", "1:2 3", "\u00b2:1", "9:",
              [], ["9:1"], [1], {}, {"did": 1}, "\ufeff9:1", "\x00"]
ODD_BYTES = [b"\xff", b"\xc3", b"\x00", b"\r", b"\n", b"\t", b" ", b"{", b"}", b'"', b":", b",", b"\xef\xbb\xbf"]


def _text_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".jsonl", ".txt", ".tsv"))


def _mutate_byte(data: bytes, rng: random.Random) -> bytes:
    i = rng.randrange(len(data))
    kind = rng.choice(["replace", "insert", "delete"])
    if kind == "delete":
        return data[:i] + data[i + 1:]
    new = rng.choice(ODD_BYTES) if rng.random() < 0.7 else bytes([rng.randrange(256)])
    return data[:i] + new + data[i + (kind == "replace"):]


def _mutate_line(data: bytes, rng: random.Random) -> bytes:
    lines = data.split(b"\n")
    i = rng.randrange(len(lines))
    kind = rng.choice(["drop", "duplicate", "swap", "truncate", "crlf", "bom"])
    if kind == "drop":
        del lines[i]
    elif kind == "duplicate":
        lines.insert(i, lines[i])
    elif kind == "swap" and len(lines) > 1:
        j = rng.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
    elif kind == "truncate":
        lines[i] = lines[i][: rng.randrange(len(lines[i]) + 1)]
    elif kind == "crlf":
        lines = [line + b"\r" if line else line for line in lines]
    else:
        lines[0] = b"\xef\xbb\xbf" + lines[0]
    return b"\n".join(lines)


def _mutate_field(data: bytes, rng: random.Random) -> bytes:
    """A JSON field set to a value of another type, or a column of a text table replaced."""
    lines = data.split(b"\n")
    i = rng.randrange(len(lines))
    try:
        obj = json.loads(lines[i])
    except ValueError:
        cols = lines[i].split(b"\t" if b"\t" in lines[i] else b" ")
        j = rng.randrange(len(cols))
        cols[j] = str(rng.choice(ODD_VALUES)).encode()
        lines[i] = (b"\t" if b"\t" in lines[i] else b" ").join(cols)
        return b"\n".join(lines)
    if not isinstance(obj, dict) or not obj:
        return data
    key = rng.choice(sorted(obj))
    if rng.random() < 0.2:
        del obj[key]
    else:
        obj[key] = rng.choice(ODD_VALUES)
    lines[i] = json.dumps(obj).encode()
    return b"\n".join(lines)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_tiny_root(tmp_path_factory.mktemp("pristine") / "root")
    assert not validate_root(root, check_images=False).errors
    return root


def test_every_mutation_is_accepted_or_reported_against_its_file(pristine: Path, tmp_path: Path) -> None:
    rng = random.Random(16)
    files = _text_files(pristine)
    work = tmp_path / "root"
    shutil.copytree(pristine, work)
    mutators = [_mutate_byte, _mutate_line, _mutate_field]
    reported = 0
    for n in range(MUTATIONS):
        rel = rng.choice(files).relative_to(pristine)
        original = (pristine / rel).read_bytes()
        mutator = mutators[n % len(mutators)]
        mutated = mutator(original, rng)
        (work / rel).write_bytes(mutated)
        try:
            report = validate_root(work, check_images=False)
        except Exception as exc:  # a crash is the failure this test exists for
            raise AssertionError(f"mutation {n} ({mutator.__name__}) of {rel} crashed validate: {exc!r}") from exc
        finally:
            (work / rel).write_bytes(original)
        if report.errors:
            reported += 1
            # The mutated file is blamed (or, for a cross-file mismatch, the file it no longer agrees with,
            # which then names the mutated one in its cause).
            named = [p for p in report.errors if p.path == str(work / rel) or rel.name in p.cause]
            assert named, f"mutation {n} ({mutator.__name__}) of {rel}: errors name other files: {report.errors[:3]}"
            for p in report.errors:
                assert "Traceback" not in p.cause and "\n" not in p.cause, p
    assert reported > MUTATIONS // 3  # the mutations do break things: the test is not vacuous

"""Every expected failure of the `rare` command is one `error: <what>: <cause>` line on stderr and exit 1,
before any Prefect run; a traceback only with --debug / RARE_DEBUG=1."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ENV = {**os.environ, "RARE_DETECT_PREFECT_SERVER": "0", "COLUMNS": "200"}


def rare(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rare", *args], capture_output=True, text=True, env=env or ENV,
                          cwd=cwd, timeout=120)


def one_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 1, and stderr is exactly one `error:` line holding every needle."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cli")
    (d / "data").mkdir()
    out = {"dir": d, "data": d / "data"}
    texts = {
        "qrels": "9:1 0 9:5 1 0\n9:2 0 9:6 1 0\n",
        "run": "9:1 Q0 9:5 1 0.9 r\n9:2 Q0 9:7 1 0.8 r\n",
        "other_run": "4:1 Q0 4:5 1 0.9 r\n",
        "empty_run": "\n",
        "dup_params": "train:\n  seed: 1\ntrain:\n  seed: 2\n",
        "empty_params": "",
        "profile_params": "profile: big\nprofiles:\n  big:\n    train:\n      batchsize: 3\n",
    }
    for name, text in texts.items():
        (d / name).write_text(text, encoding="utf-8")
        out[name] = d / name
    out["bad_utf8_qrels"] = d / "bad_utf8_qrels"
    out["bad_utf8_qrels"].write_bytes(b"9:1 0 9:5 1 0\n9:2 0 9:\xff6 1 0\n")
    out["bom_qrels"] = d / "bom_qrels"
    out["bom_qrels"].write_bytes(b"\xef\xbb\xbf9:1 0 9:5 1 0\r\n9:2 0 9:6 1 0\r\n")
    return out


def test_unknown_choices_fail_at_parse_time(files: dict[str, Path]) -> None:
    d = files["data"]
    line = one_error(rare("train", "bogus", "--data", str(d), "--out", str(d / "m")), "rare train", "'bogus'", "none")
    assert "Value error" not in line
    one_error(rare("evaluate", "x", "--model", str(d), "--inputs", "bogus", "--data", str(d), "--out", str(d / "o")),
              "--inputs", "'bogus'")
    one_error(rare("train", "corpus", "--data", str(d), "--out", str(d / "m")), "needs enhanced data",
              "--corpus-enhanced")


def test_missing_paths_and_bad_params_fail_before_any_flow(files: dict[str, Path]) -> None:
    d = files["data"]
    one_error(rare("train", "none", "--data", str(files["dir"] / "nowhere"), "--out", str(d / "m")),
              "--data", "nowhere' does not exist")
    one_error(rare("score", "--run", str(files["dir"] / "missing.trec"), "--qrels", str(files["qrels"])),
              "--run", "missing.trec' does not exist")
    result = rare("train", "none", "--data", str(d), "--out", str(d / "m"), "--params", str(files["dup_params"]))
    one_error(result, f"{files['dup_params']}:3:", "duplicate key 'train' (first on line 1)")
    assert "flow run" not in result.stdout + result.stderr  # no Prefect run was created
    one_error(rare("params", str(files["empty_params"])), f"{files['empty_params']}:1:", "empty")
    one_error(rare("params", str(files["profile_params"])), f"{files['profile_params']}:5:",
              "profiles.big.train.batchsize: unknown key")


def test_score_errors_and_warnings(files: dict[str, Path]) -> None:
    run, qrels = str(files["run"]), str(files["qrels"])
    one_error(rare("score", "--run", run, "--qrels", qrels, "--k", "0"), "--k")
    one_error(rare("score", "--run", str(files["empty_run"]), "--qrels", qrels), "run file is empty")
    one_error(rare("score", "--run", run, "--qrels", str(files["bad_utf8_qrels"])),
              f"{files['bad_utf8_qrels']}:2: not valid UTF-8 (byte 0xff at column 9)")

    ok = rare("score", "--run", run, "--qrels", str(files["bom_qrels"]), "--json")  # BOM + CRLF are fine
    assert ok.returncode == 0 and ok.stderr == "" and '"R@1": 50.0' in ok.stdout, ok.stderr

    foreign = rare("score", "--run", str(files["other_run"]), "--qrels", qrels)
    assert foreign.returncode == 0 and foreign.stderr.startswith("warning: ") and "no qid of the run" in foreign.stderr
    strict = rare("score", "--run", str(files["other_run"]), "--qrels", qrels, "--strict")
    assert strict.returncode == 1 and strict.stderr.strip().splitlines()[-1].startswith("error: ")


def test_traceback_only_on_request(files: dict[str, Path]) -> None:
    args = ("score", "--run", str(files["empty_run"]), "--qrels", str(files["qrels"]))
    for result in (rare("--debug", *args), rare(*args, env={**ENV, "RARE_DEBUG": "1"})):
        assert result.returncode == 1 and "Traceback" in result.stderr
        assert result.stderr.strip().splitlines()[-1].startswith("error: ")


def test_version_help_and_validate_of_nothing(files: dict[str, Path]) -> None:
    version = rare("--version")
    assert version.returncode == 0 and version.stdout.startswith("rare ")
    help_text = rare("--help").stdout
    assert "Traceback" not in help_text and "ImportError" not in help_text and "Usage" in help_text
    assert "import " in help_text  # the `rare import` command (issue 26) is listed
    one_error(rare("validate", str(files["dir"] / "nonexistent")), "nonexistent: data root does not exist")

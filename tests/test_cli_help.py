"""The `rare` command as a user meets it: readable help, shell completion, a busy port that fails at once."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ENV = {**os.environ, "RARE_DETECT_PREFECT_SERVER": "0", "COLUMNS": "200"}
RARE = [sys.executable, "-m", "rare"]
COMMANDS = [[], ["train"], ["evaluate"], ["serve"], ["score"], ["validate"], ["enhance", "corpus"]]


def _run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RARE, *args], capture_output=True, text=True, env=env or ENV, cwd=cwd, timeout=120)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "rare")
def test_help_shows_readable_metavars(command: list[str]):
    text = _run(*command, "--help").stdout
    assert "Usage:" in text
    for unreadable in ("<bool>", "<list[", "{variant}"):
        assert unreadable not in text, (command, unreadable)


def test_serve_help_names_port_and_ranges():
    text = _run("serve", "--help").stdout
    port = next(line for line in text.splitlines() if "--port" in line)
    assert "[1<=x<=65535]" in port and "TCP port" in port
    assert "VARIANT" in text and "[x>=1]" in text


def _complete(words: str) -> list[str]:
    env = {**ENV, "_RARE_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(len(words.split()) - 1)}
    result = subprocess.run([str(Path(sys.executable).parent / "rare")], capture_output=True, text=True, env=env,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_shell_completion_completes_commands_and_choices():
    assert _complete("rare tr") == ["train"]
    assert _complete("rare train b") == ["both"]
    assert "--install-completion" in _run("--help").stdout


def test_serve_on_a_busy_port_fails_at_once_in_one_line(tmp_path: Path):
    for sub in ("data/raw", "data/enhanced/corpus", "data/enhanced/queries"):
        (tmp_path / sub).mkdir(parents=True)
    (tmp_path / "params.yaml").write_text("evaluate: {}\n")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _run("serve", "--port", str(port), cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines == [f"error: --port {port}: 127.0.0.1:{port} is already in use (another `rare serve`?); "
                     "pick another port"], result.stderr
    assert "serving" not in result.stdout

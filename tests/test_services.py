"""`make ui`'s services: both servers come up on 127.0.0.1 and go away again."""

import os
from pathlib import Path

import pytest

from rare import servers


@pytest.mark.slow
def test_prefect_and_mlflow_ui_start_and_stop(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / ".prefect"))
    (tmp_path / "mlruns").mkdir()
    prefect = servers.Server("prefect", servers.free_port(), tmp_path / "p.pid", tmp_path / "p.log")
    mlflow = servers.Server("mlflow", servers.free_port(), tmp_path / "m.pid", tmp_path / "m.log")
    try:
        assert servers.start_all((prefect, mlflow), f"sqlite:///{tmp_path}/mlruns/mlflow.db",
                                 str(tmp_path / "mlruns/art")) == [True, True]  # side by side
        for svc in (prefect, mlflow):
            assert servers.healthy(svc)
            assert servers.start(svc) is False  # already up: not started twice
    finally:
        stopped = [servers.stop(svc) for svc in (prefect, mlflow)]
    assert stopped == [True, True]
    assert not servers.healthy(prefect) and not servers.healthy(mlflow)
    assert not prefect.pidfile.exists() and os.path.exists(tmp_path / "mlruns/mlflow.db")


def test_start_failure_is_reported(tmp_path: Path, monkeypatch):
    svc = servers.Server("mlflow", servers.free_port(), tmp_path / "m.pid", tmp_path / "m.log")
    monkeypatch.setattr(servers, "_command", lambda *a: ["python3", "-c", "import sys; sys.exit(4)"])
    with pytest.raises(RuntimeError, match=r"mlflow server exited with code 4; see .*m.log"):
        servers.start(svc, wait_s=20)


def test_a_port_in_use_is_not_free():
    import socket

    with socket.socket() as taken:
        taken.bind((servers.HOST, 0))
        taken.listen()
        assert not servers.port_free(taken.getsockname()[1])
    assert servers.port_free(servers.free_port())


@pytest.mark.parametrize("terminal", [False, True])
def test_log_lines_are_never_wrapped(capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                     terminal: bool):
    """A stage under DVC or the pipeline logs to a pipe, `rare train` in an 80-column terminal to a tty:
    either way a "View at" link must stay one line."""
    import logging
    import sys

    from rare import runtime

    monkeypatch.setattr(sys.stderr, "isatty", lambda: terminal)
    monkeypatch.setenv("COLUMNS", "80")
    url = "http://127.0.0.1:4200/runs/flow-run/0693e7e3-5f4b-7c5a-8000-b2f0a0b7a0a3"
    runtime.setup_logging()
    try:
        logging.getLogger("prefect.flow_runs").info(f"View at {url}")
    finally:
        logging.basicConfig(handlers=[logging.NullHandler()], force=True)
    lines = [line for line in capfd.readouterr().err.splitlines() if "View at" in line]
    assert len(lines) == 1 and lines[0].endswith(f"View at {url}")

"""A killed `make run` leaves no Prefect server behind: the next run finds the one it left and reuses it (and
stops it at its own end), or stops it (issue 25: the temporary server outlived a SIGKILL of the pipeline)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from rare import servers

REPO = Path(__file__).resolve().parents[1]
# A run of the pipeline up to its server: flows.pipeline._ensure_prefect_server, with a small HTTP server
# answering /api/health in place of `prefect server start` (seconds instead of tens of seconds on 2 cores).
RUN = textwrap.dedent("""
    import atexit, os, signal, sys
    from pathlib import Path
    import flows.pipeline as pipeline
    from rare import servers

    web, mode = sys.argv[1:]
    servers._command = lambda svc, *_: [sys.executable, "-m", "http.server", "--bind", servers.HOST,
                                         str(svc.port), "--directory", web]
    svc = pipeline._ensure_prefect_server()
    atexit.register(servers.stop, svc)
    print(svc.port, open(svc.pidfile).read(), flush=True)
    if mode == "kill":
        os.killpg(os.getpgid(0), signal.SIGKILL)  # what a killed `make run` gets: the whole process group
""")


def run(project: Path, mode: str) -> tuple[int, int]:
    """(port, server pid) that the run used; it runs in its own process group, like `make run`."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "RARE_DETECT_PREFECT_SERVER": "0"}
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.run([sys.executable, "-c", RUN, str(project / "web"), mode], cwd=project, env=env,
                          capture_output=True, text=True, timeout=120, start_new_session=True)
    assert proc.returncode == (-signal.SIGKILL if mode == "kill" else 0), proc.stderr
    port, pid = proc.stdout.split()
    return int(port), int(pid)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


def gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "web" / "api").mkdir(parents=True)
    (tmp_path / "web" / "api" / "health").write_text("ok")
    return tmp_path


def test_a_killed_run_s_server_is_reused_by_the_next_run_and_stopped_at_its_end(project: Path) -> None:
    port, pid = run(project, "kill")
    try:
        assert alive(pid)  # the kill of the run's process group missed its server (its own session)
        port2, pid2 = run(project, "finish")
        assert (port2, pid2) == (port, pid)  # found and reused, not a second server
        assert gone(pid)  # and stopped when that run ended
        assert not list((project / ".prefect").glob("pipeline-server-*"))
    finally:
        if alive(pid):
            os.killpg(pid, signal.SIGKILL)


def test_an_unhealthy_leftover_is_stopped_and_a_fresh_server_started(project: Path) -> None:
    state = project / ".prefect"
    state.mkdir()
    stuck = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    dead_owner = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_owner.wait()
    port = servers.free_port()
    (state / f"pipeline-server-{port}.pid").write_text(str(stuck.pid))
    (state / f"pipeline-server-{port}.owner").write_text(str(dead_owner.pid))
    try:
        _, pid = run(project, "finish")
        assert pid != stuck.pid
        assert stuck.wait(timeout=10) == -signal.SIGTERM  # the leftover was stopped
        assert gone(pid) and not list(state.glob("pipeline-server-*"))
    finally:
        if stuck.poll() is None:
            stuck.kill()


def test_a_server_whose_run_is_still_going_is_left_alone(project: Path) -> None:
    state = project / ".prefect"
    state.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])  # a run still going
    port = servers.free_port()
    (state / f"pipeline-server-{port}.pid").write_text(str(other.pid))
    (state / f"pipeline-server-{port}.owner").write_text(str(owner.pid))
    try:
        assert servers.adopt_leftover("prefect", state, "pipeline-server") is None
        assert other.poll() is None and (state / f"pipeline-server-{port}.pid").exists()
    finally:
        for proc in (other, owner):
            proc.kill()
            proc.wait()


def test_a_pid_reused_by_another_process_is_never_signalled(tmp_path: Path) -> None:
    """The pid file names a process that is not a session leader: not the server we started."""
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])  # our own session
    svc = servers.Server("prefect", 1, tmp_path / "pipeline-server-1.pid", tmp_path / "log")
    svc.pidfile.write_text(str(bystander.pid))
    try:
        assert servers.stop(svc) is False and bystander.poll() is None
        assert not svc.pidfile.exists()
    finally:
        bystander.kill()
        bystander.wait()

"""Local Prefect and MLflow servers on 127.0.0.1, started detached and found again by pid file.

`make ui` starts both for browsing; the pipeline flow starts a Prefect server for the length of a
run when none is up, so its stage processes report to one server instead of each paying for an
ephemeral one (~9 s a stage on 2 cores).

A server started for one run records its pid (``<name>-<port>.pid``) and the run that owns it
(``.owner``). A run killed with SIGKILL never stops its server (it lives in its own session, so the
kill of the run's process group misses it too); the next run finds it by those files: a healthy one
whose owner is dead is adopted (reused, then stopped at the end of the new run), any other leftover
is stopped. A server whose owner is still running is left alone.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rare.atomic import pid_alive

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Server:
    name: str
    port: int
    pidfile: Path
    logfile: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def health_url(self) -> str:
        return f"{self.url}/api/health" if self.name == "prefect" else f"{self.url}/health"


def prefect_service(port: int = 4200, state_dir: Path = Path(".prefect")) -> Server:
    return Server("prefect", port, state_dir / "server.pid", state_dir / "server.log")


def mlflow_service(port: int = 5000, state_dir: Path = Path("mlruns")) -> Server:
    return Server("mlflow", port, state_dir / "ui.pid", state_dir / "ui.log")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_free(port: int, host: str = HOST) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: a port in TIME_WAIT is free
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def healthy(svc: Server, timeout: float = 5.0) -> bool:
    """A refused connection answers at once; the timeout only bounds a server that is up but slow, as an
    MLflow server just started on 2 busy cores is (0.5 s was too short there)."""
    try:
        with urllib.request.urlopen(svc.health_url, timeout=timeout) as resp:
            return resp.status == 200
    except OSError:
        return False


def _command(svc: Server, tracking_uri: str, artifact_root: str) -> list[str]:
    bindir = Path(sys.executable).parent
    if svc.name == "prefect":
        return [str(bindir / "prefect"), "server", "start", "--host", HOST, "--port", str(svc.port),
                "--analytics-off", "--no-background"]
    return [str(bindir / "mlflow"), "ui", "--host", HOST, "--port", str(svc.port),
            "--backend-store-uri", tracking_uri, "--default-artifact-root", artifact_root,
            "--workers", "1"]  # the default 4 workers each import MLflow: ~3.6 GiB for one local user


def start(svc: Server, tracking_uri: str = "sqlite:///mlruns/mlflow.db", artifact_root: str = "mlruns/artifacts",
          wait_s: float = 120.0) -> bool:
    """Start detached (own session, survives this process); False if it was already up."""
    return start_all([svc], tracking_uri, artifact_root, wait_s)[0]


def start_all(svcs: Sequence[Server], tracking_uri: str = "sqlite:///mlruns/mlflow.db",
              artifact_root: str = "mlruns/artifacts", wait_s: float = 120.0) -> list[bool]:
    """Launch every server that is not up, then wait for them together: each spends most of its start importing
    its framework, so two started side by side are ready in about the time of the slower one."""
    launched: dict[int, subprocess.Popen] = {}
    for i, svc in enumerate(svcs):
        if healthy(svc):
            continue
        svc.pidfile.parent.mkdir(parents=True, exist_ok=True)
        with svc.logfile.open("ab") as log:
            launched[i] = subprocess.Popen(_command(svc, tracking_uri, artifact_root), stdout=log,
                                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                           start_new_session=True, env=os.environ.copy())
        svc.pidfile.write_text(str(launched[i].pid))
    waiting, deadline = dict(launched), time.monotonic() + wait_s
    while waiting and time.monotonic() < deadline:
        for i, proc in list(waiting.items()):
            if healthy(svcs[i]):
                del waiting[i]
            elif proc.poll() is not None:
                for j in launched:
                    stop(svcs[j])
                raise RuntimeError(f"{svcs[i].name} server exited with code {proc.returncode}; see {svcs[i].logfile}")
        if waiting:
            time.sleep(0.5)
    if waiting:
        for j in launched:
            stop(svcs[j])
        late = svcs[next(iter(waiting))]
        raise TimeoutError(f"{late.name} server not healthy at {late.health_url} after {wait_s:.0f} s; see {late.logfile}")
    return [i in launched for i in range(len(svcs))]


def stop(svc: Server) -> bool:
    """Stop the process group we started; False if there was nothing to stop."""
    owner_file(svc).unlink(missing_ok=True)
    if not svc.pidfile.exists():
        return False
    try:
        pid = int(svc.pidfile.read_text())
    except ValueError:
        pid = 0
    svc.pidfile.unlink()
    if pid <= 0 or not _session_leader(pid):
        return False  # gone, or the pid now names another process: never signal that one
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    for _ in range(50):
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    os.killpg(pid, signal.SIGKILL)
    return True


def owner_file(svc: Server) -> Path:
    return svc.pidfile.with_suffix(".owner")


def claim(svc: Server) -> None:
    """Record this process as the run that owns (and will stop) ``svc``."""
    owner_file(svc).write_text(str(os.getpid()))


def _session_leader(pid: int) -> bool:
    """``start`` puts each server in its own session: a pid that leads none is not (or no longer) ours."""
    try:
        return os.getsid(pid) == pid
    except ProcessLookupError:
        return False


def _owner(svc: Server) -> int | None:
    try:
        return int(owner_file(svc).read_text())
    except (OSError, ValueError):
        return None


def recorded(name: str, state_dir: Path, prefix: str) -> list[Server]:
    """Servers that runs recorded under ``state_dir`` as ``<prefix>-<port>.pid``."""
    found = []
    for pidfile in sorted(state_dir.glob(f"{prefix}-*.pid")):
        port = pidfile.stem.removeprefix(f"{prefix}-")
        if port.isdigit():
            found.append(Server(name, int(port), pidfile, state_dir / f"{prefix}.log"))
    return found


def adopt_leftover(name: str, state_dir: Path, prefix: str) -> Server | None:
    """A server that a killed run left behind: the first healthy one is claimed and returned for reuse,
    the others are stopped; servers of runs still going are left alone."""
    adopted = None
    for svc in recorded(name, state_dir, prefix):
        owner = _owner(svc)
        if owner is not None and owner != os.getpid() and pid_alive(owner):
            continue
        if adopted is None and healthy(svc):
            claim(svc)
            adopted = svc
        else:
            stop(svc)
    return adopted

"""Library caches and config folders stay in the project, never in the home folder; no tool tips."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

from rare import runtime


def test_caches_stay_in_the_project(tmp_path: Path) -> None:
    home, project = tmp_path / "home", tmp_path / "project"
    home.mkdir()
    project.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in runtime.CACHE_ENV and k not in ("XDG_CACHE_HOME",
                                                                                              "XDG_CONFIG_HOME")}
    code = ("from rare import runtime; runtime.configure(); import matplotlib; import matplotlib.pyplot as plt; "
            "plt.figure(); print(matplotlib.get_cachedir()); print(matplotlib.get_configdir())")
    out = subprocess.run([sys.executable, "-c", code], cwd=project, env={**env, "HOME": str(home)},
                         capture_output=True, text=True, check=True).stdout.split()
    assert all(Path(p).is_relative_to(project / ".cache") for p in out), out
    assert list(home.iterdir()) == []


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_lightning_tips_are_dropped() -> None:
    runtime.setup_logging()
    from pytorch_lightning.utilities.rank_zero import rank_zero_info

    collect = _Collect()
    logging.getLogger().addHandler(collect)
    try:
        rank_zero_info("💡 Tip: For seamless cloud logging, try installing [litlogger]")
        rank_zero_info("an ordinary message")
    finally:
        logging.getLogger().removeHandler(collect)
    assert collect.messages == ["an ordinary message"]

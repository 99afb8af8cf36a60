"""docs/recipes.md: every shell block marked `<!-- runs-on-default: ID -->` runs as written (the test named ID).

The DVC blocks run in a small DVC project shaped like rare's (the same param and score paths), so a recipe
that depends on how DVC names columns or compares experiments is checked without a full pipeline run.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from rare.repro import stage_env

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"<!-- runs-on-default: (\S+) -->\n```bash\n(.*?)```", re.DOTALL)
SCORE = 'import json, sys, yaml\nlr = yaml.safe_load(open("params.yaml"))["train"]["optim"]["lr"]\n' \
        'json.dump({"local": round(50 + 1000 * lr, 2) + len(sys.argv[1]), "global": 40.0}, open(sys.argv[2], "w"))\n'


def recipes() -> dict[str, str]:
    return dict(BLOCK.findall((ROOT / "docs/recipes.md").read_text(encoding="utf-8")))


def run_block(block: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**stage_env(), "COLUMNS": "100", **env}
    full.pop("PREFECT_API_URL", None)  # as a user's shell has it
    return subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=cwd, env=full, capture_output=True,
                          text=True, timeout=600)


def git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=cwd, check=True,
                   capture_output=True)


def test_every_marked_block_has_its_test():
    assert set(recipes()) == {"dvc-experiments", "dvc-share", "score", "prefect-config"}


def test_prefect_config():
    proc = run_block(recipes()["prefect-config"], ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "PREFECT_API_URL='http://127.0.0.1:4200/api' (from prefect.toml)" in proc.stdout


def test_score(tmp_path: Path):
    """On the files the default pipeline names: the embedded benchmark's qrels (generated here, tiny
    preset: the same dataset-tasks as the default) and a run file at the evaluation's path for it."""
    (tmp_path / "params.yaml").write_text("data:\n  preset: tiny\ntracking:\n  enabled: false\n")
    made = run_block("rare data data/raw", tmp_path)
    assert made.returncode == 0, made.stderr
    qrels = tmp_path / "data/raw/qrels/test/mbeir_emblemkb_task6_test_qrels.txt"
    positives = [line.split() for line in qrels.read_text().splitlines() if line.strip()]
    run = tmp_path / "eval/both/runs/local/emblemkb_task6.trec"
    run.parent.mkdir(parents=True)
    run.write_text("".join(f"{qid} Q0 {did} 1 1.0 both-local\n" for qid, _, did, *_ in positives))
    proc = run_block(recipes()["score"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "R@1" in proc.stdout and "100.00" in proc.stdout


def _dvc_project(root: Path) -> Path:
    root.mkdir()
    git("init", "-q", "-b", "main", cwd=root)
    subprocess.run(["dvc", "init", "-q"], cwd=root, env=stage_env(), check=True)
    (root / "score.py").write_text(SCORE)
    (root / "params.yaml").write_text("train:\n  optim:\n    lr: 0.001\n")
    stages = {name: (f"  eval_{name}:\n    cmd: python score.py {name} eval/{name}/scores.json\n    deps: [score.py]\n"
                     f"    params: [train.optim.lr]\n    metrics:\n    - eval/{name}/scores.json:\n"
                     "        cache: false\n") for name in ("none", "both")}
    data = "  data:\n    cmd: mkdir -p data && echo raw > data/raw.txt\n    outs: [data]\n"
    (root / "dvc.yaml").write_text("stages:\n" + data + "".join(stages.values()))
    for name in stages:
        (root / "eval" / name).mkdir(parents=True)
    subprocess.run(["dvc", "repro", "-q"], cwd=root, env=stage_env(), check=True)
    git("add", "-A", cwd=root)
    git("commit", "-qm", "base", cwd=root)
    return root


@pytest.mark.slow
def test_dvc_experiments(tmp_path: Path):
    project = _dvc_project(tmp_path / "p")
    proc = run_block(recipes()["dvc-experiments"], project)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    diff = out[out.index("Path "):out.index(" Experiment ")]
    assert "train.optim.lr  0.001" in diff and "0.0005" in diff and "eval/both/scores.json" in diff
    table = [line for line in out[out.index(" Experiment ") - 200:].splitlines() if not line.startswith("|")]
    assert max(len(line) for line in table) <= 100 and "…" not in "".join(table)
    assert "54.5" in "".join(table)
    md = [line for line in out.splitlines() if line.startswith("|")]
    assert md[0].startswith("| Experiment") and any("[lr5e-4]" in line for line in md)
    assert md[0].count("scores.json:") == 4  # local and global of both evaluations
    assert any(line.startswith("| main ") for line in md)


@pytest.mark.slow
def test_dvc_share(tmp_path: Path):
    project = _dvc_project(tmp_path / "p")
    clone = tmp_path / "clone"
    proc = run_block(recipes()["dvc-share"], project, REMOTE=str(tmp_path / "remote"), CLONE=str(clone))
    assert proc.returncode == 0, proc.stderr
    assert (clone / "data/raw.txt").read_text() == "raw\n"
    assert any((tmp_path / "remote").rglob("*"))

"""`make realworld`: the pipeline on real images and texts (profile ``debian_clipart``, docs/realworld.md).

    python -m flows.realworld [--max-per-source N] [--no-install] [--work build/debian_clipart]

1. ``rare debian-sources``: the Debian packages (installed when missing) become captions files;
2. ``rare import``: one M-BEIR root at data/debian_clipart (the profile's ``data.mbeir_root``);
3. every stage of dvc.yaml but ``pretrain`` (its checkpoint is committed), as the ``rare`` command dvc.yaml
   gives it, with ``--params`` = params.yaml under ``profile: debian_clipart``, run in the work folder, so
   the default profile's outputs (data/raw, models/, eval/, report/) are left as they are.
Each stage's wall time goes to <work>/stage_seconds.json; the report to <work>/report/report.md.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import yaml

from rare import stages
from rare.atomic import atomic_write_text

PROFILE = "debian_clipart"
REPO = stages.ROOT


def _run(cmd: list[str], cwd: Path) -> float:
    print("+ " + shlex.join(cmd), flush=True)
    start = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, check=False)
    if r.returncode != 0:
        sys.exit(f"error: `{shlex.join(cmd)}` failed (exit {r.returncode})")
    return round(time.perf_counter() - start, 1)


def profile_params(work: Path, root: Path) -> Path:
    """params.yaml with the profile selected and its data root made absolute (the stages run in ``work``)."""
    doc = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    doc["profile"] = PROFILE
    doc["profiles"][PROFILE]["data"]["mbeir_root"] = str(root.resolve())
    path = work / "params.yaml"
    atomic_write_text(path, yaml.safe_dump(doc, sort_keys=False))
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-per-source", type=int, default=800, help="items per Debian source (default 800)")
    ap.add_argument("--no-install", action="store_true", help="never apt-get install the packages")
    ap.add_argument("--work", type=Path, default=REPO / "build" / PROFILE)
    ap.add_argument("--sources", nargs="*", default=["tuxstamps", "openclipart", "notoemoji"])
    ap.add_argument("--stage", action="append", help="only these dvc.yaml stages (repeatable; default: all but "
                    "pretrain), e.g. --stage eval_zero_shot --stage eval_none --stage report")
    ap.add_argument("--no-import", action="store_true", help="keep the imported root as it is")
    args = ap.parse_args(argv)
    work: Path = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    rare = str(Path(sys.executable).with_name("rare"))
    doc = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    root = (REPO / doc["profiles"][PROFILE]["data"]["mbeir_root"]).resolve()
    times = work / "stage_seconds.json"
    seconds: dict[str, float] = json.loads(times.read_text(encoding="utf-8")) if times.is_file() else {}
    if not args.no_import:
        _import(args, work, rare, root, seconds)
    params = profile_params(work, root)
    pretrained = work / stages.PRETRAINED
    if not pretrained.exists():
        pretrained.parent.mkdir(parents=True, exist_ok=True)
        pretrained.symlink_to(REPO / stages.PRETRAINED)
    for stage in stages.stages():
        if stage.step is stages.PRETRAIN or (args.stage and stage.name not in args.stage):
            continue
        seconds[stage.name] = _run([rare, *shlex.split(stage.cmd)[1:], "--params", str(params)], work)
        atomic_write_text(times, json.dumps(seconds, indent=1) + "\n")
    print(f"report: {work / 'report' / 'report.md'}; stage seconds: {times}")


def _import(args: argparse.Namespace, work: Path, rare: str, root: Path, seconds: dict[str, float]) -> None:
    listing = work / "sources.txt"
    cmd = [rare, "debian-sources", str(work / "sources"), "--max-per-source", str(args.max_per_source),
           *(f"--source={s}" for s in args.sources), "--no-install" if args.no_install else "--install"]
    print("+ " + shlex.join(cmd), flush=True)
    start = time.perf_counter()
    out = subprocess.run(cmd, check=False, stdout=subprocess.PIPE, text=True)
    if out.returncode != 0:
        sys.exit(f"error: `{shlex.join(cmd)}` failed (exit {out.returncode})")
    seconds["debian-sources"] = round(time.perf_counter() - start, 1)
    listing.write_text(out.stdout, encoding="utf-8")
    seconds["import"] = _run([rare, "import", *out.stdout.split(), "--out", str(root)], work)


if __name__ == "__main__":
    main()

"""DVC's plots rendered offline, labelled by variant: ``python -m rare.plots`` (``make plots``).

``dvc plots show`` writes HTML that loads vega from a CDN, which renders blank without internet, and names
each line by its file (``none_train.json``). This takes DVC's own vega-lite specs (``dvc plots show --json``,
or ``dvc plots diff --json REV...`` to compare revisions), names each series by the variant or evaluation its
file belongs to, and renders them to SVG with vl-convert (vega's renderer, bundled in the wheel), plus an
index.html that needs nothing from the network.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from rare.atomic import atomic_write
from rare.repro import dvc_command, stage_env

# metrics/loss/none_train.json -> none; eval/both/headline.json (shown as both/headline.json) -> both
_SERIES = re.compile(r"(?:^|/)(?P<name>[\w.-]+?)(?:_(?:train|val))?(?:/headline)?\.json$")


_UNSAFE = re.compile(r"[^\w.-]+")  # a plot name (report/scores.png) as a file name


def series_name(filename: str) -> str:
    m = _SERIES.search(filename)
    return m["name"] if m else filename


def relabel(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec with every file name of a series replaced by the series' name, in the data and wherever
    DVC repeats it (a legend's scale domain): legends and panel titles then read none, corpus, both..."""
    values = spec.get("data", {}).get("values", [])
    names = {str(row["filename"]): series_name(str(row["filename"])) for row in values if "filename" in row}

    def swap(node: Any) -> Any:
        if isinstance(node, dict):
            return {key: swap(value) for key, value in node.items()}
        if isinstance(node, list):
            return [swap(item) for item in node]
        return names.get(node, node) if isinstance(node, str) else node

    return swap(spec)


def specs(revisions: list[str], repo_dir: Path = Path(".")) -> dict[str, dict[str, Any]]:
    """DVC's vega-lite specs by plot name (image plots, such as the report's PNGs, are left out)."""
    cmd = dvc_command("plots", "diff", *revisions, "--json") if revisions else dvc_command("plots", "show", "--json")
    proc = subprocess.run(cmd, cwd=repo_dir, env=stage_env(), capture_output=True, text=True)
    if not proc.stdout.strip():
        raise ValueError(f"dvc plots: no output (exit {proc.returncode}): {proc.stderr.strip()[-300:]}")
    data = json.loads(proc.stdout).get("data", {})
    return {name: relabel(entry["content"]) for name, entries in data.items()
            for entry in entries if entry.get("type") == "vega"}


def render(out: Path, revisions: list[str] = [], repo_dir: Path = Path(".")) -> list[Path]:  # noqa: B006
    import vl_convert

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, spec in specs(revisions, repo_dir).items():
        path = out / (_UNSAFE.sub("_", name) + ".svg")
        atomic_write(path, [vl_convert.vegalite_to_svg(spec).encode()])
        written.append(path)
    figures = "\n".join(f'<figure><img src="{html.escape(p.name)}" alt="{html.escape(p.stem)}"></figure>'
                        for p in written)
    atomic_write(out / "index.html", [f"<!doctype html><meta charset=utf-8><title>rare plots</title>\n{figures}\n"
                                      .encode()])
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("revisions", nargs="*", help="git revisions or experiments to compare (default: the workspace)")
    ap.add_argument("--out", type=Path, default=Path("dvc_plots"), help="output folder (default: dvc_plots)")
    args = ap.parse_args(argv)
    try:
        written = render(args.out, args.revisions)
    except (ValueError, OSError) as exc:
        from rare import failures

        failures.print_error(failures.describe(exc))
        return 1
    print(f"{args.out / 'index.html'}: {len(written)} plots")
    return 0


if __name__ == "__main__":
    sys.exit(main())

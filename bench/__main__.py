"""Run the benchmark suite and write bench/results.json.

    python -m bench                     # every benchmark, full sizes (the figures in the README)
    python -m bench --quick             # smaller sizes, a smoke run
    python -m bench search train        # only these
    python -m bench --table             # print bench/results.json as the README's Markdown table

Each benchmark measures its figure and its reference side by side in the same run, so ratios hold
on a loaded machine where absolute numbers don't.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path

from rare import runtime

runtime.configure()

from bench.common import print_rows  # noqa: E402

SUITE = {
    "search": "bench.search_bench",          # 1. exact search vs faiss IndexFlatIP, GFLOP/s vs matmul
    "global": "bench.global_pool_bench",     # 2. 5.6M x 768 fp16 global pool: peak RSS, throughput
    "enhance": "bench.enhance_bench",        # 3. engine overhead, warm cache, flat memory
    "train": "bench.train_bench",            # 4. Lightning vs plain torch loop, data vs step time
    "embed": "bench.embed_bench",            # 5. candidate embedding throughput, decode vs model share
    "pipeline": "bench.pipeline_bench",      # 6. `dvc repro` of the embedded default, per-stage wall time
    "budget": "bench.text_budget_bench",     # 7. share of corpus-enhancement tokens inside CLIP's 77
    "ranks": "bench.ranks_bench",            # 8. evaluation embedding on 2 gloo ranks vs 1, items/s
    "report": "bench.report_bench",          # 9. what the report's intervals add to its stage time
    "manifest": "bench.manifest_bench",      # 10. manifest checks vs the reads they guard (issue 25)
    "import": "bench.import_bench",          # 11. rare import vs decoding the images alone with Pillow
}
RESULTS = Path(__file__).resolve().parent / "results.json"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("only", nargs="*", help=f"benchmarks to run, of {list(SUITE)} (default: all)")
    ap.add_argument("--quick", action="store_true", help="smaller sizes")
    ap.add_argument("--table", action="store_true", help="print the last results as Markdown, run nothing")
    args = ap.parse_args(argv)
    if args.table:
        print(markdown_table(json.loads(RESULTS.read_text())))
        return 0
    names = args.only or list(SUITE)
    unknown = sorted(set(names) - set(SUITE))
    if unknown:
        ap.error(f"unknown benchmark(s) {unknown}; choose from {list(SUITE)}")
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results.setdefault("benchmarks", {})
    failed = 0
    for name in names:
        print(f"== {name} ({SUITE[name]})", flush=True)
        start = time.perf_counter()
        rows = importlib.import_module(SUITE[name]).run(quick=args.quick)
        print_rows(rows)
        failed += sum(r["verdict"] == "fail" for r in rows)
        results["benchmarks"][name] = {"rows": rows, "seconds": round(time.perf_counter() - start, 1),
                                       "quick": args.quick, "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    results["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "python": sys.version.split()[0]}
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {RESULTS}; {failed} figure(s) missed their target")
    return 0


def markdown_table(results: dict) -> str:
    lines = ["| benchmark | figure | value | reference | ratio | target | verdict |", "|---|---|---:|---:|---:|---:|---|"]
    for name, bench in results["benchmarks"].items():
        for r in bench["rows"]:
            sign = "<=" if r.get("better", "lower") == "lower" else ">="
            target = f"{sign} {r['target']:g}" if r["target"] is not None else ""
            lines.append(f"| {name}{' (quick)' if bench['quick'] else ''} | {r['name']} | {r['value']:.4g} {r['unit']} "
                         f"| {r['reference']:.4g} | {r['ratio']:.3g} | {target} | {r['verdict']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

"""What enhancement cost, per side and operation, from the per-item cost records ``rare enhance`` writes
beside its runtime figures (``metrics/runtime/enhance_<side>_costs.jsonl``): items, tokens per 1,000
items and generation throughput, so a user can price a run on real M-BEIR from the stand-in's figures
(tokens) and their own server's (items/s)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from rare.data.input_error import DataError
from rare.data.lines import iter_lines


@dataclass(frozen=True)
class OpCost:
    side: str
    op: str
    items: int          # items routed to the op
    generated: int      # of them, generated in this run (the rest: identical inputs or cached)
    tokens_in: int
    tokens_out: int
    seconds: float      # generation seconds charged to the generated items

    @property
    def in_per_1000(self) -> float:
        return self.tokens_in / self.items * 1000 if self.items else 0.0

    @property
    def out_per_1000(self) -> float:
        return self.tokens_out / self.items * 1000 if self.items else 0.0

    @property
    def items_per_s(self) -> float | None:
        return self.generated / self.seconds if self.seconds > 0 else None


def read_costs(path: Path) -> list[dict]:
    records = []
    for lineno, text in iter_lines(path):
        try:
            records.append(json.loads(text))
        except json.JSONDecodeError as exc:
            raise DataError(path, lineno, f"not a cost record ({exc.msg})") from None
    return records


def per_op(side: str, records: Iterable[dict]) -> list[OpCost]:
    totals: dict[str, list[float]] = {}
    for r in records:
        t = totals.setdefault(r["op"], [0, 0, 0, 0, 0.0])
        t[0] += 1
        t[1] += not r["cached"]
        t[2] += r["tokens_in"]
        t[3] += r["tokens_out"]
        t[4] += r["seconds"]
    return [OpCost(side, op, int(t[0]), int(t[1]), int(t[2]), int(t[3]), float(t[4])) for op, t in sorted(totals.items())]


def cost_lines(runtime_dir: Path) -> list[str]:
    """Markdown table of every side's costs found under ``runtime_dir``; [] when there are none."""
    rows = []
    for side in ("corpus", "queries"):
        path = Path(runtime_dir) / f"enhance_{side}_costs.jsonl"
        if path.exists():
            rows += per_op(side, read_costs(path))
    if not rows:
        return []
    lines = ["| side | op | items | generated | prompt tokens / 1k items | completion tokens / 1k items | items/s |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for c in rows:
        speed = "–" if c.items_per_s is None else f"{c.items_per_s:,.0f}"
        lines.append(f"| {c.side} | {c.op} | {c.items:,} | {c.generated:,} | {c.in_per_1000:,.0f} | "
                     f"{c.out_per_1000:,.0f} | {speed} |")
    return lines

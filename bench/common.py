"""One row per figure: measured value, the reference measured beside it in the same run, ratio, verdict."""

from __future__ import annotations

from typing import Any, Literal


def row(name: str, value: float, reference: float, unit: str, target: float | None,
        better: Literal["lower", "higher"] = "lower") -> dict[str, Any]:
    """``ratio = value / reference``; the target bounds it from above (lower is better) or below."""
    ratio = value / reference if reference else float("inf")
    if target is None:
        verdict = "info"
    elif better == "lower":
        verdict = "pass" if ratio <= target else "fail"
    else:
        verdict = "pass" if ratio >= target else "fail"
    return {"name": name, "value": round(value, 4), "reference": round(reference, 4), "unit": unit,
            "ratio": round(ratio, 4), "target": target, "better": better, "verdict": verdict}


def format_row(r: dict[str, Any]) -> str:
    sign = "<=" if r.get("better", "lower") == "lower" else ">="
    target = f"{sign} {r['target']}" if r["target"] is not None else "-"
    return (f"{r['name']:<84} {r['value']:>11.3f} {r['unit']:<5} ref {r['reference']:>10.3f}  "
            f"ratio {r['ratio']:>8.3f} (target {target:>7})  {r['verdict']}")


def print_rows(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        print(format_row(r), flush=True)

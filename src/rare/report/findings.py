"""Which of the paper's three findings this run reproduces, judged by fixed rules on the table's numbers.

Gains are in points of the group mean of the headline metric. A difference counts only when it
exceeds ``min_gain``, so a few queries' noise on a small benchmark is not read as a finding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rare.mbeir import Probe
from rare.report.table import SCORE, Evaluation, columns, find_baseline, group_mean

REPRODUCED, PARTLY = "reproduced", "partly reproduced"
NOT_REPRODUCED, NOT_ASSESSABLE = "not reproduced", "not assessable"


@dataclass(frozen=True)
class Finding:
    claim: str
    verdict: str
    evidence: str


def _trained(evals: Sequence[Evaluation], inputs: str) -> Evaluation | None:
    return next((e for e in evals if e.regime == "trained" and e.inputs == inputs), None)


def _inference_only(evals: Sequence[Evaluation], inputs: str, model_variant: str) -> Evaluation | None:
    return next((e for e in evals if e.regime == "inference-only" and e.inputs == inputs
                 and e.info.model_variant == model_variant), None)


def _gains(e: Evaluation, base: Evaluation, pool: str) -> dict[Probe, float]:
    out = {}
    for probe, dts in columns([base, e]).items():
        a, b = group_mean(e, pool, dts), group_mean(base, pool, dts)
        if a is not None and b is not None:
            out[probe] = a - b
    return out


def corpus_helps_knowledge(evals: Sequence[Evaluation], pool: str, min_gain: float) -> Finding:
    claim = "Corpus enhancement chiefly helps knowledge-intensive queries."
    base, corpus = find_baseline(evals), _trained(evals, "corpus")
    if base is None or corpus is None:
        return Finding(claim, NOT_ASSESSABLE, "needs the trained 'none' and 'corpus' evaluations")
    gains = _gains(corpus, base, pool)
    if Probe.KNOWLEDGE not in gains or len(gains) < 2:
        return Finding(claim, NOT_ASSESSABLE, "needs knowledge-intensive and other dataset-tasks")
    k = gains.pop(Probe.KNOWLEDGE)
    others = ", ".join(f"{g.value} {v:+.1f}" for g, v in gains.items())
    ok = k > min_gain and k > max(gains.values())
    evidence = (f"corpus vs none: knowledge-intensive {k:+.1f}; {others} "
                f"(rule: knowledge gain > {min_gain:g} and the largest)")
    return Finding(claim, REPRODUCED if ok else NOT_REPRODUCED, evidence)


def query_critical_for_compositional(evals: Sequence[Evaluation], pool: str, min_gain: float) -> Finding:
    claim = "Query enhancement is critical for compositional modification requests."
    base, query, corpus = find_baseline(evals), _trained(evals, "query"), _trained(evals, "corpus")
    if base is None or query is None:
        return Finding(claim, NOT_ASSESSABLE, "needs the trained 'none' and 'query' evaluations")
    gains = _gains(query, base, pool)
    if Probe.COMPOSITIONAL not in gains:
        return Finding(claim, NOT_ASSESSABLE, "no compositional dataset-task was evaluated")
    q = gains[Probe.COMPOSITIONAL]
    c = _gains(corpus, base, pool).get(Probe.COMPOSITIONAL) if corpus is not None else None
    ok = q > min_gain and (c is None or q - c > min_gain)
    versus = "" if c is None else f"; corpus vs none on compositional {c:+.1f}"
    rule = f"rule: query gain > {min_gain:g} and exceeds the corpus gain by > {min_gain:g}"
    return Finding(claim, REPRODUCED if ok else NOT_REPRODUCED,
                   f"query vs none on compositional {q:+.1f}{versus} ({rule})")


def training_beats_inference_only(evals: Sequence[Evaluation], pool: str, min_gain: float) -> Finding:
    claim = "Training on enhanced representations beats enhancing only at inference time."
    base = find_baseline(evals)
    if base is None:
        return Finding(claim, NOT_ASSESSABLE, "needs the trained 'none' evaluation")
    results = []
    for v in ("corpus", "query", "both"):
        trained = _trained(evals, v)
        infer = _inference_only(evals, v, base.info.model_variant)
        if trained is None or infer is None:
            continue
        a, b = trained.metrics["score"].get(pool), infer.metrics["score"].get(pool)
        if a is not None and b is not None:
            results.append((v, trained.name, infer.name, a - b))
    if not results:
        return Finding(claim, NOT_ASSESSABLE, "needs trained and inference-only evaluations of the same inputs")
    wins = sum(d > min_gain for *_, d in results)
    verdict = REPRODUCED if wins == len(results) else PARTLY if wins else NOT_REPRODUCED
    evidence = "; ".join(f"{t} vs {i}: {SCORE} {d:+.1f}" for _, t, i, d in results)
    return Finding(claim, verdict, f"{evidence} (rule: each difference > {min_gain:g})")


def assess(evals: Sequence[Evaluation], pool: str = "local", min_gain: float = 1.0) -> list[Finding]:
    return [corpus_helps_knowledge(evals, pool, min_gain), query_critical_for_compositional(evals, pool, min_gain),
            training_beats_inference_only(evals, pool, min_gain)]

"""Which of the paper's three findings the evidence supports, judged by the 95% intervals of the gains each
claim needs (``rare.report.stats``), never by a fixed threshold on point estimates.

A claim is a list of needed gains, each a paired contrast. The verdict is the first matching row of
``RULES``: every needed gain above zero -> supported; any needed gain significantly below zero ->
contradicted; anything else -> inconclusive. "Chiefly" is stated as paired differences: the knowledge
gain minus each other probe's gain. Each finding also carries its "net effect": the variants' M-BEIR
score change against the baseline, with its interval. Rules and claims are fixed; the verdict is
whatever the intervals say.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from rare.mbeir import Probe
from rare.report.stats import Bootstrap, Contrast, Interval, combine, mean_of
from rare.report.table import SCORE, Evaluation, columns, find_baseline

SUPPORTED, CONTRADICTED = "supported", "contradicted"
INCONCLUSIVE, NOT_ASSESSABLE = "inconclusive", "not assessable"

# (test on the signs of the needed gains' intervals: +1 above zero, -1 below, 0 contains zero; verdict)
RULES: tuple[tuple[Callable[[list[int]], bool], str], ...] = (
    (lambda signs: bool(signs) and all(s == 1 for s in signs), SUPPORTED),
    (lambda signs: any(s == -1 for s in signs), CONTRADICTED),
    (lambda signs: True, INCONCLUSIVE),
)


def verdict(intervals: Sequence[Interval]) -> str:
    signs = [iv.sign() for iv in intervals]
    return next(v for test, v in RULES if test(signs))


@dataclass(frozen=True)
class Need:
    """One gain a claim needs, as a paired contrast; ``label`` says it in words."""

    label: str
    contrast: Contrast


@dataclass(frozen=True)
class Claim:
    claim: str
    needs: list[Need]
    net: list[Need]                 # the variants' M-BEIR score change: reported, not judged
    missing: str = ""               # why it cannot be assessed; "" when it can


@dataclass(frozen=True)
class Finding:
    claim: str
    verdict: str
    evidence: str
    needs: list[tuple[str, Interval]] = field(default_factory=list)
    net: list[tuple[str, Interval]] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {"claim": self.claim, "verdict": self.verdict, "evidence": self.evidence,
                "needs": [{"label": label, **iv.as_dict()} for label, iv in self.needs],
                "net": [{"label": label, **iv.as_dict()} for label, iv in self.net]}


def _row(evals: Sequence[Evaluation], inputs: str, regime: str = "trained", model_variant: str | None = None,
         ) -> Evaluation | None:
    return next((e for e in evals if e.regime == regime and e.inputs == inputs
                 and (model_variant is None or e.info.model_variant == model_variant)), None)


def _score_need(a: Evaluation, b: Evaluation, dts: list[str]) -> Need:
    return Need(f"{a.name} vs {b.name}: {SCORE}", Contrast(a.name, b.name, mean_of(dts)))


def corpus_helps_knowledge(evals: Sequence[Evaluation]) -> Claim:
    claim = "Corpus enhancement chiefly helps knowledge-intensive queries."
    base, corpus = find_baseline(evals), _row(evals, "corpus")
    groups = columns(evals)
    if base is None or corpus is None:
        return Claim(claim, [], [], "needs the trained 'none' and 'corpus' evaluations")
    if Probe.KNOWLEDGE not in groups or len(groups) < 2:
        return Claim(claim, [], [], "needs knowledge-intensive and other dataset-tasks")
    k = groups[Probe.KNOWLEDGE]
    needs = [Need("corpus vs none: knowledge-intensive", Contrast(corpus.name, base.name, mean_of(k)))]
    for probe, dts in groups.items():
        if probe != Probe.KNOWLEDGE:
            needs.append(Need(f"knowledge-intensive gain minus {probe.value} gain",
                              Contrast(corpus.name, base.name, combine(mean_of(k), mean_of(dts, -1.0)))))
    every = [dt for dts in groups.values() for dt in dts]
    return Claim(claim, needs, [_score_need(corpus, base, every)])


def query_critical_for_compositional(evals: Sequence[Evaluation]) -> Claim:
    claim = "Query enhancement is critical for compositional modification requests."
    base, query, corpus = find_baseline(evals), _row(evals, "query"), _row(evals, "corpus")
    groups = columns(evals)
    if base is None or query is None:
        return Claim(claim, [], [], "needs the trained 'none' and 'query' evaluations")
    if Probe.COMPOSITIONAL not in groups:
        return Claim(claim, [], [], "no compositional dataset-task was evaluated")
    c = mean_of(groups[Probe.COMPOSITIONAL])
    needs = [Need("query vs none: compositional", Contrast(query.name, base.name, c))]
    if corpus is not None:  # query gain minus corpus gain, both against none: query - corpus
        needs.append(Need("query gain minus corpus gain on compositional", Contrast(query.name, corpus.name, c)))
    every = [dt for dts in groups.values() for dt in dts]
    return Claim(claim, needs, [_score_need(query, base, every)])


def training_beats_inference_only(evals: Sequence[Evaluation]) -> Claim:
    claim = "Training on enhanced representations beats enhancing only at inference time."
    base = find_baseline(evals)
    if base is None:
        return Claim(claim, [], [], "needs the trained 'none' evaluation")
    every = [dt for dts in columns(evals).values() for dt in dts]
    needs, net = [], []
    for v in ("corpus", "query", "both"):
        trained, infer = _row(evals, v), _row(evals, v, "inference-only", base.info.model_variant)
        if trained is not None and infer is not None:
            needs.append(_score_need(trained, infer, every))
            net.append(_score_need(trained, base, every))
    if not needs:
        return Claim(claim, [], [], "needs trained and inference-only evaluations of the same inputs")
    return Claim(claim, needs, net)


CLAIMS = (corpus_helps_knowledge, query_critical_for_compositional, training_beats_inference_only)


def judge(c: Claim, boot: Bootstrap, permutations: int) -> Finding:
    if c.missing:
        return Finding(c.claim, NOT_ASSESSABLE, c.missing)
    needs = [(n.label, boot.interval(n.contrast, permutations)) for n in c.needs]
    net = [(n.label, boot.interval(n.contrast)) for n in c.net]
    result = verdict([iv for _, iv in needs])
    evidence = "; ".join(f"{label} {iv.text()} (p={iv.p:.3g})" if iv.p is not None else f"{label} {iv.text()}"
                         for label, iv in needs)
    return Finding(c.claim, result, evidence, needs, net)


def assess(evals: Sequence[Evaluation], boot: Bootstrap, permutations: int = 0) -> list[Finding]:
    """Every claim of ``CLAIMS``, judged on the draws of ``boot`` (one pool's per-query values)."""
    return [judge(make(evals), boot, permutations) for make in CLAIMS]

"""The ablation variants and the evaluations they make: a table only the stage declarations read.

A variant is which sides of the data read enhanced text. That choice reaches a stage through its command
line alone (``--corpus-enhanced`` / ``--queries-enhanced``, which dvc.yaml's ``cmd`` holds and DVC tracks):
the library derives the text view from the enhanced inputs it is given and never reads this table. So the
code-dep closure does not follow this module (``rare.stages.declare.MOUNT``), and adding a variant stales
only the new variant's stages (new cmds) and the report (its ``--order`` grows), not the variants already run.

Add a variant: one line in ``VARIANTS``; ``rare dvc-yaml`` declares its training, its evaluation and its
inference-only evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass

from rare.data.views import TextMode


@dataclass(frozen=True)
class VariantSpec:
    """Which sides read enhanced text, and how a candidate's enhancement joins its text when the variant says
    (None: ``train.text_mode.corpus``). Both reach the stage as options of its cmd."""

    corpus: bool
    queries: bool
    corpus_mode: TextMode | None = None

    @property
    def sides(self) -> tuple[bool, bool]:
        return self.corpus, self.queries

    def options(self) -> dict[str, str]:
        """The cmd options beyond the enhanced folders (``enhanced_inputs``)."""
        return {"--corpus-mode": self.corpus_mode} if self.corpus_mode else {}


VARIANTS: dict[str, VariantSpec] = {
    "none": VariantSpec(corpus=False, queries=False),
    "corpus": VariantSpec(corpus=True, queries=False),
    "query": VariantSpec(corpus=False, queries=True),
    "both": VariantSpec(corpus=True, queries=True),
}
BASELINE = "none"  # the variant whose model the inference-only rows evaluate on enhanced inputs
ZERO_SHOT = "zero-shot"
INFERENCE_ONLY = tuple(v for v in VARIANTS if v != BASELINE)  # infer-<v>: the baseline model on <v>'s inputs
EVALUATIONS = (ZERO_SHOT, *VARIANTS, *(f"infer-{v}" for v in INFERENCE_ONLY))  # the report's row order


def variant_sides(variant: str) -> tuple[bool, bool]:
    """(enhanced candidates, enhanced queries) of ``variant``; an unknown name is one clear error."""
    try:
        return VARIANTS[variant].sides
    except KeyError:
        raise ValueError(f"unknown variant {variant!r}; allowed: {list(VARIANTS)}") from None

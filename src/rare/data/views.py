"""What text the retriever sees for a record: original or enhanced, replaced or appended.

This is the one place the ablation variants differ, so train and evaluate share it.
"""

from __future__ import annotations

from typing import Literal

from rare.data.records import Candidate, Enhanced, Query

TextMode = Literal["replace", "append"]
VARIANTS: dict[str, tuple[bool, bool]] = {  # variant -> (enhanced candidates, enhanced queries)
    "none": (False, False),
    "corpus": (True, False),
    "query": (False, True),
    "both": (True, True),
}
APPEND_PREFIX = "Visual context:"


def variant_sides(variant: str) -> tuple[bool, bool]:
    try:
        return VARIANTS[variant]
    except KeyError:
        raise ValueError(f"unknown variant {variant!r}; allowed: {list(VARIANTS)}") from None


def combine(original: str, enhanced: Enhanced | None, use_enhanced: bool, mode: TextMode) -> str:
    """Failed or skipped enhancement falls back to the original text."""
    if not use_enhanced or enhanced is None or not enhanced.ok:
        return original
    assert enhanced.txt is not None
    if mode == "replace" or not original:
        return enhanced.txt
    if mode == "append":
        return f"{original} {APPEND_PREFIX} {enhanced.txt}"
    raise ValueError(f"unknown text mode {mode!r}; allowed: ['replace', 'append']")


def candidate_text(cand: Candidate, use_enhanced: bool, mode: TextMode) -> str:
    return combine(cand.txt, cand.enhanced, use_enhanced, mode)


def query_text(query: Query, instruction: str | None, use_enhanced: bool, mode: TextMode) -> str:
    """M-BEIR puts the task instruction before the query text; image-only queries get it alone."""
    body = combine(query.txt, query.enhanced, use_enhanced, mode)
    if not instruction:
        return body
    return f"{instruction} {body}" if body else instruction

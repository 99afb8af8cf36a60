"""What text the retriever sees for a record: original or enhanced, replaced or appended.

This is the one place the ablation variants differ, so train and evaluate share it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from rare.data.errors import DataError
from rare.data.layout import MBEIRRoot
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


def side_file(raw: MBEIRRoot, enhanced_dir: Path | None, path: Path, use_enhanced: bool) -> Path:
    """The file to read for one side: the raw one, or its mirror (same relative path) in the enhanced output."""
    if not use_enhanced:
        return path
    if enhanced_dir is None:
        raise ValueError(f"this variant needs enhanced data for {path.name}, but no enhanced directory was given")
    mirrored = Path(enhanced_dir) / Path(path).relative_to(raw.path)
    if not mirrored.exists():
        raise DataError(mirrored, None, "enhanced file is missing; run `rare enhance` for this side first")
    return mirrored

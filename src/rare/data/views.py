"""What text the retriever sees for a record: original or enhanced, replaced or appended.

Train and evaluate share it. Which sides read enhanced text (the ablation variant) is decided by the
caller, from the enhanced inputs it was given; the variant table is the stage declarations' (``rare.stages.variants``).

Text budget. CLIP reads 77 tokens and the tokenizer cuts from the end, so where the enhancement
sits decides whether it is read at all: appended after a 50-word passage, one word of a 13-word
visual context survived. ``prepend`` (the corpus default) puts the visual context first, so it
reaches the model whole whenever it fits the budget, and the passage fills what is left (its
lead, which for Wikipedia-style passages is the part that names the subject).
``bench/text_budget_bench.py`` measures the share of enhancement tokens each mode keeps.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Literal

from rare.data.input_error import DataError
from rare.data.layout import MBEIRRoot
from rare.data.records import Candidate, Enhanced, Query

TextMode = Literal["replace", "append", "prepend"]
APPEND_PREFIX = "Visual context:"
SENTENCE_END = (".", "?", "!")


def format_string(s: str) -> str:
    """UniIR's ``format_string``: strip, drop surrounding double quotes, capitalise, end with a full stop."""
    s = (s or "").replace("\r", "").strip().strip('"')
    if s:
        s = s[0].upper() + s[1:]
        s = s if s[-1] in SENTENCE_END else s + "."
    return s


_SPACES = re.compile(r"\s+")


def openai_clip_clean(s: str) -> str:
    """What OpenAI ``clip``'s ``SimpleTokenizer`` does to a text before BPE (ftfy, HTML unescaped twice,
    whitespace collapsed, lower-cased). transformers' ``CLIPTokenizer`` only lower-cases and collapses
    whitespace, so without this ``Obama’s`` or ``&amp;`` tokenise differently from UniIR's ids."""
    s = html.unescape(html.unescape(_fix_text(s))).strip()
    return _SPACES.sub(" ", s).strip().lower()


def _fix_text(s: str) -> str:
    """``ftfy.fix_text``, skipped where it cannot change anything: every ftfy fix needs a non-ASCII
    character, a control character or an ``&`` (HTML), and ftfy costs ~0.5 ms a caption."""
    if s.isascii() and s.isprintable() and "&" not in s:
        return s
    import ftfy

    return ftfy.fix_text(s)


def uniir_text(s: str) -> str:
    """UniIR's text path: ``format_string`` (its data loader), then OpenAI ``clip``'s cleaning (its tokenizer)."""
    return openai_clip_clean(format_string(s))


# Applied by the collator to every text just before tokenising (the family names one: rare.model.families).
# `format_string` alone is LamRA's text path (a cased Qwen tokenizer: no CLIP cleaning, no lower-casing).
TEXT_FORMATS = {"none": lambda s: s, "uniir": uniir_text, "format_string": format_string}


def _sentence(s: str) -> str:
    s = s.strip()
    return s if not s or s.endswith(SENTENCE_END) else s + "."


def combine(original: str, enhanced: Enhanced | None, use_enhanced: bool, mode: TextMode) -> str:
    """Failed or skipped enhancement falls back to the original text."""
    if not use_enhanced or enhanced is None or not enhanced.ok:
        return original
    assert enhanced.txt is not None
    if mode == "replace" or not original:
        return enhanced.txt
    if mode == "append":
        return f"{original} {APPEND_PREFIX} {enhanced.txt}"
    if mode == "prepend":
        return f"{APPEND_PREFIX} {_sentence(enhanced.txt)} {original}"
    raise ValueError(f"unknown text mode {mode!r}; allowed: ['replace', 'append', 'prepend']")


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

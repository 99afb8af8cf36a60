"""7. Text budget: the share of corpus-enhancement tokens that reach CLIP's 77-token text tower.

A refined M-BEIR candidate is its passage plus a generated visual context; the tokenizer cuts
the composed text at 77 tokens from the end. Per text mode (``rare.data.views``) this counts,
token by token, how many enhancement tokens and how many passage tokens survive the cut, on
passages drawn from M-BEIR-like length distributions (WebQA snippets, OVEN and InfoSeek Wikipedia
passages, 30 to 300 words) with visual contexts of 8 to 60 words (the refine prompt asks for
comma-separated phrases, at most 100 words; a 100-word case is reported apart).

Assumptions, stated because they shape the figures: the word lengths are modelled (log-normal per
dataset, clipped to 30-300), not read from M-BEIR (not on this machine); the words are real English
from Python's standard-library docstrings; the tokenizer is MiniLM's 30k WordPiece (the only real
vocabulary installed here; CLIP's 49k BPE splits English at a similar ~1.3 tokens per word). The
UniIR ``format_string`` is applied as the ``clip`` family does. Run: ``python -m bench budget``.
"""

from __future__ import annotations

import pydoc
import re
import sys
from typing import Any

import numpy as np

from bench.common import row
from rare.data.records import Candidate, Enhanced
from rare.data.views import TextMode, candidate_text, format_string

MAX_LEN = 77
MODES: tuple[TextMode, ...] = ("prepend", "append", "replace")
DEFAULT: TextMode = "prepend"
# (median words, log-normal sigma) per dataset, clipped to 30..300 words.
DATASETS = {"webqa": (45, 0.45), "oven": (120, 0.55), "infoseek": (160, 0.5)}


def _words() -> list[str]:
    """A few hundred thousand real English words (stdlib docstrings), lower-cased punctuation kept."""
    import builtins
    import collections
    import json
    import os
    import pathlib
    import string

    text = " ".join(pydoc.getdoc(obj) for mod in (builtins, collections, json, os, pathlib, string, str, dict, list)
                    for obj in [mod, *vars(mod).values()] if pydoc.getdoc(obj))
    return [w for w in re.split(r"\s+", text) if re.fullmatch(r"[A-Za-z][A-Za-z,.'-]*", w)]


def _sample(words: list[str], n: int, rng: np.random.Generator) -> str:
    start = int(rng.integers(0, len(words) - n))
    return " ".join(words[start:start + n])


def kept(tokenizer: Any, text: str, span: tuple[int, int], budget: int) -> tuple[int, int]:
    """(tokens of text[span] within the first ``budget`` content tokens, tokens of text[span] in all)."""
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    inside = [i for i, (a, b) in enumerate(offsets) if a >= span[0] and b <= span[1] and b > a]
    return sum(i < budget for i in inside), len(inside)


def measure(tokenizer: Any, mode: TextMode, passage: str, visual: str) -> dict[str, int]:
    cand = Candidate("1:1", passage, "mbeir_images/x.jpg", "image,text",
                     enhanced=Enhanced("refine", "ok", visual))
    text = format_string(candidate_text(cand, True, mode))
    budget = MAX_LEN - 2  # start and end tokens
    at = text.rfind(visual[1:])  # format_string may capitalise the first letter: match after it
    enh = kept(tokenizer, text, (at - 1, at + len(visual) - 1), budget)
    p = text.find(passage[1:]) if mode != "replace" else -1
    orig = kept(tokenizer, text, (p - 1, p + len(passage) - 1), budget) if p >= 0 else (0, len(
        tokenizer(passage, add_special_tokens=False)["input_ids"]))
    return {"enh_kept": enh[0], "enh_all": enh[1], "orig_kept": orig[0], "orig_all": orig[1]}


def run(quick: bool = False) -> list[dict[str, Any]]:
    import transformers
    from transformers import AutoTokenizer

    from rare.config.train import PRETRAINED_TEXT
    from rare.model.towers import resolve_source

    transformers.utils.logging.set_verbosity_error()  # passages over MiniLM's 512 are counted, never embedded
    tokenizer = AutoTokenizer.from_pretrained(resolve_source(PRETRAINED_TEXT))
    words = _words()
    rng = np.random.default_rng(0)
    per_dataset = 100 if quick else 600
    cases = []
    for name, (median, sigma) in DATASETS.items():
        lengths = np.clip(np.round(rng.lognormal(np.log(median), sigma, per_dataset)), 30, 300).astype(int)
        for n in lengths:
            cases.append((name, _sample(words, int(n), rng), _sample(words, int(rng.integers(8, 61)), rng)))
    rows = []
    for mode in MODES:
        totals: dict[str, dict[str, int]] = {}
        for name, passage, visual in cases:
            m = measure(tokenizer, mode, passage, visual)
            for key in (name, "all"):
                t = totals.setdefault(key, {"enh_kept": 0, "enh_all": 0, "orig_kept": 0, "orig_all": 0})
                for k, v in m.items():
                    t[k] += v
        target = 0.9 if mode == DEFAULT else None
        for key, t in totals.items():
            tag = "default" if mode == DEFAULT else "ablation"
            rows.append(row(f"{mode} ({tag}) {key}: enhancement tokens reaching the model / all", t["enh_kept"],
                            t["enh_all"], "tok", target if key == "all" else None, better="higher"))
        t = totals["all"]
        rows.append(row(f"{mode}: passage tokens reaching the model / all", t["orig_kept"], t["orig_all"], "tok",
                        None, better="higher"))
    long_visual = _sample(words, 100, rng)
    worst = measure(tokenizer, DEFAULT, cases[0][1], long_visual)
    rows.append(row(f"{DEFAULT}: a 100-word visual context (the prompt's cap) / its tokens", worst["enh_kept"],
                    worst["enh_all"], "tok", None, better="higher"))
    return rows


if __name__ == "__main__":
    from bench.common import print_rows

    print_rows(run(quick="--quick" in sys.argv))

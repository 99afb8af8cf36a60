"""Is a generation usable as retrieval text? Every rejection names its cause.

A cause is ``"<category>: <detail>"``; stats count failures by category, the per-item record
keeps the detail. Rejected items fall back to their original text downstream.
"""

from __future__ import annotations

import re

from rare.enhance.backends.interface import EnhanceResult

IMAGE_UNREADABLE = "image_unreadable"
EMPTY = "empty_output"
REFUSAL = "refusal"
LENGTH = "over_length_cap"
ARTEFACT = "chat_artefact"
BACKEND = "backend_error"
FINISH = "finish_reason"  # the server ended the answer for another reason than a natural stop (abort, ...)

# Template tokens of common chat formats, role labels and reasoning tags that must never reach an index.
_ARTEFACT = re.compile(
    r"<\|[a-z_]+\|>|</?think>|\[/?INST\]|<image>|<(?:start|end)_of_turn>|</?s>"
    r"|^\s*(?:assistant|user|system)\s*[:\n]",
    re.IGNORECASE | re.MULTILINE,
)
_REFUSAL = re.compile(
    r"^\s*(?:i'?m sorry|sorry,|i apologi[sz]e|i cannot|i can'?t|i am unable|i'm unable|i am not able|"
    r"as an ai|unfortunately,? i)",
    re.IGNORECASE,
)
_SPACE = re.compile(r"\s+")


def cause_category(cause: str) -> str:
    """``"image unreadable: x"`` and ``"image_unreadable: x"`` count together."""
    return re.sub(r"[\s-]+", "_", cause.split(":", 1)[0].strip().lower())


def judge(result: EnhanceResult, max_new_tokens: int) -> tuple[str | None, str | None]:
    """(text, None) for a usable output, with whitespace collapsed to one line; (None, cause) otherwise."""
    if result.text is None:
        error = result.error or "no text and no error reported"
        if ":" not in error:
            return None, f"{BACKEND}: {error}"
        return None, f"{cause_category(error)}: {error.split(':', 1)[1].strip()}"
    if result.finish_reason == "length" or (result.finish_reason is None and result.tokens_out > max_new_tokens):
        return None, f"{LENGTH}: cut at {max_new_tokens} new tokens"
    if result.finish_reason not in (None, "stop"):  # abort, content_filter, ...: the text is not a whole answer
        return None, f"{FINISH}: {result.finish_reason}"
    artefact = _ARTEFACT.search(result.text)
    if artefact:
        return None, f"{ARTEFACT}: {artefact.group(0).strip()!r}"
    text = _SPACE.sub(" ", result.text).strip()
    if not text:
        return None, f"{EMPTY}: nothing but whitespace" if result.text else f"{EMPTY}: no text"
    if _REFUSAL.match(text):
        return None, f"{REFUSAL}: {text[:60]!r}"
    return text, None

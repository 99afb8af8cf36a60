"""Which operation each item gets: the paper's routing as a table, overridable from params.yaml.

Rules match on what an item actually carries, so a record declared ``image,text`` whose text
is empty is captioned rather than "rewritten" from nothing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rare.config.enhance import RouteRule
from rare.config.ops import CAPTION, NONE, REFINE, RESOLVE, REWRITE
from rare.hashing import key_digest

# The released script's question test: ends with "?" or starts with a wh-word.
_QUESTION_START = re.compile(r"^\s*(what|where|why|when|which|how)\b", re.IGNORECASE)

DEFAULT_RULES: tuple[RouteRule, ...] = (
    RouteRule(side="corpus", modality="image", op=CAPTION),
    RouteRule(side="corpus", modality="image,text", op=REFINE),
    RouteRule(side="corpus", modality="text", op=NONE),
    RouteRule(side="query", modality="image", op=CAPTION),
    RouteRule(side="query", modality="image,text", question=True, op=RESOLVE),
    RouteRule(side="query", modality="image,text", question=False, op=REWRITE),
    RouteRule(side="query", modality="text", op=NONE),
)


def is_question(text: str) -> bool:
    stripped = text.strip()
    return stripped.endswith("?") or bool(_QUESTION_START.match(stripped))


def carried_modality(text: str, has_image: bool) -> str:
    has_text = bool(text.strip())
    if has_image and has_text:
        return "image,text"
    return "image" if has_image else "text"


class Router:
    def __init__(self, overrides: Sequence[RouteRule] = ()):
        self.rules = (*overrides, *DEFAULT_RULES)
        self.digest = key_digest([r.model_dump(mode="json") for r in self.rules])

    def route(self, side: str, text: str, has_image: bool, task_id: int | None, dataset_id: int) -> str:
        modality = carried_modality(text, has_image)
        question: bool | None = None
        for rule in self.rules:
            if rule.side != side or rule.modality != modality:
                continue
            if rule.task_ids is not None and task_id not in rule.task_ids:
                continue
            if rule.dataset_ids is not None and dataset_id not in rule.dataset_ids:
                continue
            if rule.question is not None:
                if question is None:
                    question = is_question(text)
                if rule.question != question:
                    continue
            return rule.op
        raise AssertionError(f"no routing rule for side={side} modality={modality}")  # defaults cover every case

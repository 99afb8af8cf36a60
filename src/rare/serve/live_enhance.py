"""Query enhancement at request time, by the configured backend, the way the enhancement stage does it.

The op comes from the same routing table, the prompt from the same versioned template, and the request
key from the same inputs, so a benchmark query enhanced here gets the text its enhanced record holds
(the stand-in's noise draws depend on the key). Nothing is cached: serving never writes. Where the
backend cannot enhance (the stand-in on free text has no scene annotation to read), the result is a
``failed`` block with its cause, and the query falls back to its original text, as in the pipeline.
"""

from __future__ import annotations

import threading
from pathlib import Path

from rare.config.enhance import EnhanceParams
from rare.config.ops import NEEDS_IMAGE, NONE
from rare.data.records import Enhanced
from rare.enhance.backends import READS_SRC_CONTENT, generation_settings, make_backend
from rare.enhance.backends.interface import EnhanceRequest
from rare.enhance.checks import judge
from rare.enhance.prompts import PromptSet
from rare.enhance.routing import Router
from rare.hashing import file_digest, key_digest  # the engine's recipe: keys match the stage's

SIDE = "query"


class LiveEnhancer:
    """One backend, built once; calls are serialised because a backend is not promised to be thread-safe."""

    def __init__(self, params: EnhanceParams):
        self.params = params
        self.backend = make_backend(params)
        self.prompts = PromptSet.load(params.prompt_version)
        self.router = Router(params.routing)
        self.max_new_tokens = params.max_new_tokens.query
        self.identity = key_digest(self.backend.name, self.backend.model, generation_settings(params),
                                   params.prompt_version)
        self.reads_src_content = self.backend.name in READS_SRC_CONTENT
        self._lock = threading.Lock()

    def _block(self, op: str, status: str, txt: str | None = None, cause: str | None = None) -> Enhanced:
        return Enhanced(op, status, txt, cause, self.backend.name, self.backend.model, self.params.prompt_version)

    def enhance(self, text: str, image: Path | None, task_id: int, dataset_id: int,
                src_content: str | None = None) -> Enhanced:
        """The ``enhanced`` block for one query; ``src_content`` only for benchmark queries."""
        op = self.router.route(SIDE, text, image is not None, task_id, dataset_id)
        if op == NONE:
            return self._block(NONE, "skipped")
        text = text[: self.params.max_text_chars]
        template = self.prompts.template(op, SIDE)
        image = image if op in NEEDS_IMAGE else None
        src = src_content if self.reads_src_content else None
        key = key_digest(self.identity, template.name, template.digest, self.max_new_tokens,
                         file_digest(image) if image is not None else "",
                         text if template.uses_text else "", src)
        request = EnhanceRequest(key=key, op=op, side=SIDE, text=text, image=image, system=template.system,
                                 instruction=template.render(text), max_new_tokens=self.max_new_tokens,
                                 src_content=src)
        with self._lock:
            result = self.backend.generate([request])[0]
        txt, cause = judge(result, self.max_new_tokens)
        return self._block(op, "ok" if txt is not None else "failed", txt, cause)

    def close(self) -> None:
        self.backend.close()

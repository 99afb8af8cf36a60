"""The enhancement operations: what each does and which inputs it needs.

The routing table maps every item to one of these; the params schema, the prompts and the backends
all read them from here. They sit with the config (below rare.enhance) so that reading the enhance params
imports nothing of the enhancement code.
"""

from __future__ import annotations

from typing import Literal

CAPTION = "caption"    # image-only corpus entry or image-only query: dense caption of the image
REFINE = "refine"      # image+text corpus entry: keep the original text, add visual context
RESOLVE = "resolve"    # image+question query: name the visual subject in a few words, never answer
REWRITE = "rewrite"    # image+modification query: concise target constraints, text only (no image)
NONE = "none"          # text-only item: left unchanged, never sent to a backend
OPS = (CAPTION, REFINE, RESOLVE, REWRITE, NONE)
Op = Literal[OPS]  # type: ignore[valid-type]  # the same five names, for the params schema

NEEDS_IMAGE = frozenset({CAPTION, REFINE, RESOLVE})
NEEDS_TEXT = frozenset({REFINE, RESOLVE, REWRITE})

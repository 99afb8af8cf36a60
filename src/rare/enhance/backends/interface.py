"""The one interface every enhancement backend implements.

The engine routes an item to an operation, renders the operation's versioned prompt, and
hands the backend a batch of requests; the backend returns one result per request, in order.
A backend never raises for a single bad item: it returns a result with ``error`` set, so the
engine can record the cause and fall back to the original text. It raises ``BackendUnavailable``
when its engine cannot answer at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class EnhanceRequest:
    key: str                     # content-addressed cache key (backend, model, prompt version, input hash)
    op: str                      # one of rare.config.ops.OPS except NONE
    side: str                    # "corpus" | "query"
    text: str                    # the original text ("" when the record has none)
    image: Path | None           # resolved image path, None for text-only operations (REWRITE)
    system: str                  # rendered system prompt of the operation's template
    instruction: str             # rendered user instruction (already contains `text` where the template wants it)
    max_new_tokens: int
    src_content: str | None = None  # source metadata; only the offline stand-in reads it


@dataclass
class EnhanceResult:
    text: str | None             # raw generated text; None on failure
    error: str | None = None     # cause, e.g. "image unreadable: ...", "backend error: ..."
    tokens_in: int = 0           # the server's usage.prompt_tokens (also on a failed answer that reported it)
    tokens_out: int = 0          # the server's usage.completion_tokens: what the answer cost, kept or not
    finish_reason: str | None = None  # "stop" | "length" | ...; "length" marks an output cut at the cap
    seconds: float = 0.0         # generation wall time charged to this request (the engine's batch share)
    extra: dict[str, str] = field(default_factory=dict)
    requests: int = 0            # HTTP requests this item cost in this run, retries included (0: none sent)


class BackendUnavailable(ConnectionError):
    """The engine behind the backend could not answer (a server down past its retries).

    Not an item failure: the shard fails and is retried or rerun. An OSError, so the user reads it as
    one ``error:`` line (an expected failure of the environment, not a bug). ``done`` maps a request's index to
    the results that did complete, which the engine caches before failing, so nothing finished is lost.
    """

    def __init__(self, message: str, done: dict[int, EnhanceResult]):
        super().__init__(message)
        self.done = done


@runtime_checkable
class Backend(Protocol):
    name: str    # "standin" | "transformers" | "openai" | ...
    model: str   # model id or path; goes into the cache key

    def generate(self, requests: list[EnhanceRequest]) -> list[EnhanceResult]:
        """One result per request, same order. Deterministic for identical requests."""
        ...

    def close(self) -> None:
        ...


class BackendConfigError(BackendUnavailable):
    """The backend's settings are wrong (auth, route, model name), or every request of a batch got the same
    error: no answer can come until the user fixes something.

    Not an item failure either: no item is stored as failed, the shard stays unfinished, and a rerun
    after the fix generates every item. Never retried (``retryable``): it would fail the same way.
    """

    retryable = False

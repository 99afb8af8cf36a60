"""Any OpenAI-compatible chat-completions server: ``vllm serve``, SGLang, LMDeploy, TGI.

The VLM runs in its own environment or container (vLLM's pins cannot share one with rare's),
and this client only speaks HTTP. Each request is a list of chat messages, so the server renders
them with the model's own chat template; images are downscaled to ``max_pixels`` here and sent
inline as base64 data URLs, so the server never needs rare's files.

Failures split two ways. A server that cannot answer (connection refused, timeout, 429, 5xx)
is retried with exponential backoff on the next base URL; when the retries run out the backend
raises ``BackendUnavailable`` carrying the results that did complete, the engine caches those,
and the shard fails whole (a rerun redoes none of them). An answer that is wrong for one item
(4xx, a malformed body after retries, an unreadable image) is that item's failure record.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from rare.config.enhance import OpenAIOptions
from rare.data.images import ImageLoadError
from rare.enhance.backends.base import BackendUnavailable, EnhanceRequest, EnhanceResult
from rare.enhance.backends.vlm import load_image
from rare.enhance.checks import IMAGE_UNREADABLE

RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
MAX_BACKOFF_S = 60.0
MIME = {"png": "image/png", "jpeg": "image/jpeg"}


class Malformed(ValueError):
    """A 200 answer without a usable chat completion in it."""


def image_url(path: Any, max_pixels: int, fmt: str) -> str:
    img = load_image(path, max_pixels).convert("RGB")
    buf = io.BytesIO()
    img.save(buf, format=fmt.upper(), **({"quality": 95} if fmt == "jpeg" else {}))
    return f"data:{MIME[fmt]};base64,{base64.b64encode(buf.getvalue()).decode()}"


def messages(req: EnhanceRequest, image: str | None) -> list[dict[str, Any]]:
    """The same turns as ``vlm.chat_messages``, with the image part as an OpenAI ``image_url``."""
    user: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": image}}] if image else []
    user.append({"type": "text", "text": req.instruction})
    out: list[dict[str, Any]] = [{"role": "system", "content": req.system}] if req.system else []
    out.append({"role": "user", "content": user})
    return out


def parse_completion(body: bytes) -> EnhanceResult:
    try:
        data = json.loads(body)
        choice = data["choices"][0]
        text = choice["message"]["content"]
        usage = data.get("usage") or {}
        if not isinstance(text, str):
            raise TypeError(f"message content is {type(text).__name__}, not a string")
        return EnhanceResult(text=text, tokens_in=int(usage.get("prompt_tokens") or 0),
                             tokens_out=int(usage.get("completion_tokens") or 0),
                             finish_reason=choice.get("finish_reason"))
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise Malformed(f"malformed chat completion ({type(exc).__name__}: {exc}): {body[:200]!r}") from None


class OpenAIBackend:
    name = "openai"

    def __init__(self, model: str, options: OpenAIOptions, *, max_pixels: int = 1_003_520, seed: int = 0):
        self.model = model
        self.options = options
        self.max_pixels = max_pixels
        self.seed = seed
        key = os.environ.get(options.api_key_env, "") if options.api_key_env else ""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        limits = httpx.Limits(max_connections=options.max_concurrency,
                              max_keepalive_connections=options.max_concurrency)
        self.client = httpx.Client(timeout=options.timeout_s, headers=headers, limits=limits)
        self.pool = ThreadPoolExecutor(options.max_concurrency, thread_name_prefix="openai")
        self._next_url = itertools.count()
        self._lock = threading.Lock()

    def _url(self) -> str:
        with self._lock:
            i = next(self._next_url)
        urls = self.options.base_urls
        return urls[i % len(urls)].rstrip("/") + "/chat/completions"

    def _payload(self, req: EnhanceRequest) -> dict[str, Any] | EnhanceResult:
        image = None
        if req.image is not None:
            try:
                image = image_url(req.image, self.max_pixels, self.options.image_format)
            except ImageLoadError as exc:
                return EnhanceResult(text=None, error=f"{IMAGE_UNREADABLE}: {exc}")
        return {"model": self.model, "messages": messages(req, image), "max_tokens": req.max_new_tokens,
                "temperature": 0.0, "top_p": 1.0, "seed": self.seed, "n": 1, "stream": False}

    def _call(self, req: EnhanceRequest) -> EnhanceResult:
        """One item, retried while the server is unavailable; raises ``_Down`` when retries run out."""
        payload = self._payload(req)
        if isinstance(payload, EnhanceResult):
            return payload
        o = self.options
        cause = ""
        for attempt in range(o.max_retries + 1):
            if attempt:
                time.sleep(min(o.backoff_s * 2 ** (attempt - 1), MAX_BACKOFF_S))
            url = self._url()  # the next server: a retry also fails over
            try:
                resp = self.client.post(url, json=payload)
            except httpx.TransportError as exc:  # refused, reset, timed out
                cause = f"{url}: {type(exc).__name__}: {exc}"
                continue
            if resp.status_code in RETRY_STATUS:
                cause = f"{url}: HTTP {resp.status_code}: {resp.text[:200]}"
                continue
            if resp.status_code != 200:  # a 4xx about this request: retrying cannot help
                return EnhanceResult(text=None, error=f"backend error: HTTP {resp.status_code}: {resp.text[:300]}")
            try:
                return parse_completion(resp.content)
            except Malformed as exc:
                cause = f"{url}: {exc}"
                if attempt == o.max_retries:
                    return EnhanceResult(text=None, error=f"backend error: {exc}")
        raise _Down(f"no answer after {o.max_retries + 1} attempts; last: {cause}")

    def generate(self, requests: list[EnhanceRequest]) -> list[EnhanceResult]:
        futures = [self.pool.submit(self._call, req) for req in requests]
        done: dict[int, EnhanceResult] = {}
        down: list[str] = []
        for i, future in enumerate(futures):  # wait for all: what completed is kept even when some fail
            try:
                done[i] = future.result()
            except _Down as exc:
                down.append(str(exc))
        if down:
            raise BackendUnavailable(f"{self.name} server unavailable for {len(down)} of {len(requests)} requests "
                                     f"({down[0]})", done)
        return [done[i] for i in range(len(requests))]

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.client.close()


class _Down(RuntimeError):
    pass

"""Any OpenAI-compatible chat-completions server: ``vllm serve``, SGLang, LMDeploy, TGI.

The VLM runs in its own environment or container (vLLM's pins cannot share one with rare's),
and this client only speaks HTTP. Each request is a list of chat messages, so the server renders
them with the model's own chat template; images are downscaled to ``max_pixels`` here and sent
inline as base64 data URLs, so the server never needs rare's files.

Failures split three ways:

- **Configuration** (``BackendConfigError``): a base URL that fails the preflight ``GET /models``
  (auth, route, the model not served), a 401/403/404/405 answer, or one identical error for every
  request of a batch. The stage fails at once, no item is stored as failed, and a rerun after the fix
  generates every item. Left as per-item failures they would be frozen into finished shards.
- **The server cannot answer** (refused, reset, past the deadline, 408/409/429/5xx, a malformed
  body): retried on the next base URL after the one that failed; a failing URL rests for its back-off
  (or the server's ``Retry-After``, capped) before anyone sends to it again. When the retries run out
  the backend raises ``BackendUnavailable`` carrying the results that did complete, the engine caches
  those, and the shard fails whole (a rerun redoes none of them).
- **An answer that is wrong for one item** (a 400 such as a prompt over the context length, a
  malformed body after every retry, ``content: null``, a ``finish_reason`` other than ``stop``, an
  unreadable image) is that item's failure record, naming the HTTP status and the server's message.
"""

from __future__ import annotations

import base64
import email.utils
import io
import json
import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

import httpx

from rare.config.enhance import OpenAIOptions
from rare.data.images import ImageLoadError
from rare.enhance.backends.chat import load_image
from rare.enhance.backends.interface import BackendConfigError, BackendUnavailable, EnhanceRequest, EnhanceResult
from rare.enhance.checks import BACKEND, EMPTY, FINISH, IMAGE_UNREADABLE

RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
CONFIG_STATUS = frozenset({401, 403, 404, 405})  # about the settings, never about one item
MAX_BACKOFF_S = 60.0
PREFLIGHT_TIMEOUT_S = 30.0
# One error on every request of a batch is a configuration error from this many requests on: a couple of
# items may share one legitimate failure (two equal prompts over the context), a whole batch does not.
UNIFORM_MIN_REQUESTS = 4
MIME = {"png": "image/png", "jpeg": "image/jpeg"}


class Malformed(ValueError):
    """A 200 answer without a usable chat completion in it."""


class _Down(RuntimeError):
    """One request's retries ran out while the server could not answer."""


class _Config(RuntimeError):
    """One request got an answer about the settings (401/403/404/405)."""


class _Stopped(RuntimeError):
    """Another request of the batch found a configuration error: this one gives up unsent."""


class _Deadline(httpx.TimeoutException):
    """The whole answer did not arrive within ``timeout_s`` (httpx's own timeouts bound each read only)."""


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


def server_message(body: bytes) -> str:
    """The server's own words from an error body: vLLM's ``{"error": {"message"}}`` (older vLLM: a flat
    ``{"message"}``), FastAPI's ``{"detail"}``, a proxy's ``{"error": "..."}``; else the body's start."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"]
        for found in (error, data.get("message"), data.get("detail")):
            if isinstance(found, str):
                return found
    return body[:300].decode("utf-8", "replace").strip() or "(empty body)"


def parse_completion(body: bytes) -> EnhanceResult:
    """A usable answer, or an item's failure (``content: null``, a ``finish_reason`` besides stop and
    length); raises ``Malformed`` for a body that is no chat completion (worth a retry)."""
    data: Any = None
    try:
        data = json.loads(body)
        choice = data["choices"][0]
        content = choice["message"].get("content")
        reason = choice.get("finish_reason")
        usage = data.get("usage") or {}
        tokens = {"tokens_in": int(usage.get("prompt_tokens") or 0), "tokens_out": int(usage.get("completion_tokens") or 0)}
        if content is not None and not isinstance(content, str):
            raise TypeError(f"message content is {type(content).__name__}, not a string")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        if isinstance(data, dict) and "error" in data:  # a gateway's error page with a 200
            raise Malformed(f"HTTP 200 with an error body: {server_message(body)}") from None
        raise Malformed(f"malformed chat completion ({type(exc).__name__}: {exc}): {body[:200]!r}") from None
    if content is None:  # deterministic at temperature 0: asking again gets the same
        return EnhanceResult(text=None, error=f"{EMPTY}: the server answered content null (finish_reason {reason})",
                             finish_reason=reason, **tokens)
    if reason in ("stop", "length"):  # "length": judged an over-length failure, and cached (it is deterministic)
        return EnhanceResult(text=content, finish_reason=reason, **tokens)
    # abort (preempted, server shutting down), content_filter, a missing reason: not a whole answer, not cached
    return EnhanceResult(text=None, error=f"{FINISH}: {reason or 'missing'} after {tokens['tokens_out']} tokens",
                         finish_reason=reason, **tokens)


def retry_after(value: str | None, cap: float) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date), at most ``cap``."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - datetime.now(timezone.utc)).total_seconds()
    return min(max(seconds, 0.0), cap) if math.isfinite(seconds) else None


class BaseUrls:
    """Which base URL a request tries: no shared counter, so a retry always moves on from the URL that
    failed (with one live and one dead URL, one retry always reaches the live one). A URL that failed
    rests until its back-off ends; while every URL rests, a request waits for the first to come back."""

    def __init__(self, urls: list[str]):
        self.urls = [u.rstrip("/") for u in urls]
        self._until = [0.0] * len(self.urls)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.urls)

    def rest(self, i: int, seconds: float) -> None:
        with self._lock:
            self._until[i] = max(self._until[i], time.monotonic() + seconds)

    def pick(self, start: int, stop: threading.Event) -> int:
        """The first URL from ``start`` on (cyclically) that is not resting."""
        n = len(self.urls)
        while True:
            now = time.monotonic()
            with self._lock:
                until = list(self._until)
            for k in range(n):
                i = (start + k) % n
                if until[i] <= now:
                    return i
            if stop.wait(min(until) - now):
                raise _Stopped


def config_hint(status: int, message: str, model: str, api_key_env: str | None) -> str:
    """What the user most likely has to change for a configuration answer."""
    if status in (401, 403):
        if api_key_env is None:
            return "the server wants an API key: set enhance.openai.api_key_env to the name of a variable holding it"
        if not os.environ.get(api_key_env):
            return f"${api_key_env} (enhance.openai.api_key_env) is not set in this environment: export it"
        return f"the API key in ${api_key_env} is refused: is it the server's --api-key?"
    if "model" in message.lower():
        return f"enhance.model {model!r} must be the server's served model name (vllm serve --served-model-name)"
    return "wrong route: each enhance.openai.base_urls entry must end in /v1"


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
        self.urls = BaseUrls(options.base_urls)
        try:
            self.preflight()
        except BaseException:
            self.close()
            raise

    # -- before any request ---------------------------------------------------------------------
    def _check_models(self, i: int) -> str | None:
        """A configuration problem of one base URL, or None. A URL that cannot answer now rests: the
        requests' retries deal with it, as with a server that comes up late."""
        url = f"{self.urls.urls[i]}/models"
        try:
            resp = self.client.get(url, timeout=min(self.options.timeout_s, PREFLIGHT_TIMEOUT_S))
        except httpx.TransportError:
            self.urls.rest(i, self.options.backoff_s)
            return None
        if resp.status_code in CONFIG_STATUS:
            message = server_message(resp.content)
            hint = config_hint(resp.status_code, message, self.model, self.options.api_key_env)
            return f"{url}: HTTP {resp.status_code}: {message} ({hint})"
        if resp.status_code != 200:
            self.urls.rest(i, self.options.backoff_s)
            return None
        try:
            served = [m["id"] for m in resp.json()["data"]]
        except (ValueError, KeyError, TypeError):
            return (f"{url}: HTTP 200 but no model list ({server_message(resp.content)}): is this an "
                    f"OpenAI-compatible server, and does the base URL end in /v1?")
        if self.model not in served:
            return (f"{url}: the server does not serve model {self.model!r} (it serves {served}); set enhance.model "
                    f"to its served model name")
        return None

    def preflight(self) -> None:
        """``GET /models`` on every base URL, before the first request: a wrong key, route or model name
        costs one request per URL, not one per item."""
        problems = [p for p in self.pool.map(self._check_models, range(len(self.urls))) if p]
        if problems:
            raise BackendConfigError(f"{self.name} configuration: " + "; ".join(problems), {})

    # -- one request ----------------------------------------------------------------------------
    def _payload(self, req: EnhanceRequest) -> dict[str, Any] | EnhanceResult:
        image = None
        if req.image is not None:
            try:
                image = image_url(req.image, self.max_pixels, self.options.image_format)
            except ImageLoadError as exc:
                return EnhanceResult(text=None, error=f"{IMAGE_UNREADABLE}: {exc}")
        return {"model": self.model, "messages": messages(req, image), "max_tokens": req.max_new_tokens,
                "temperature": 0.0, "top_p": 1.0, "seed": self.seed, "n": 1, "stream": False}

    def _post(self, url: str, payload: dict[str, Any]) -> tuple[int, httpx.Headers, bytes]:
        """The whole answer within ``timeout_s``: a body trickled out byte by byte fails like a silent server."""
        timeout = self.options.timeout_s
        deadline = time.monotonic() + timeout
        with self.client.stream("POST", url, json=payload) as resp:
            body = bytearray()
            for chunk in resp.iter_bytes():
                body += chunk
                if time.monotonic() > deadline:
                    raise _Deadline(f"no whole answer within timeout_s {timeout:g} s ({len(body)} bytes so far)")
            if time.monotonic() > deadline:
                raise _Deadline(f"no whole answer within timeout_s {timeout:g} s")
            return resp.status_code, resp.headers, bytes(body)

    def _backoff(self, attempt: int) -> float:
        return min(self.options.backoff_s * 2 ** attempt, MAX_BACKOFF_S)

    def _call(self, index: int, req: EnhanceRequest, stop: threading.Event) -> EnhanceResult:
        """One item, retried on the next URL while the server cannot answer; raises ``_Down`` when the retries
        run out, ``_Config`` (and stops the batch) on an answer about the settings."""
        payload = self._payload(req)
        if isinstance(payload, EnhanceResult):
            return payload
        o = self.options
        cause = ""
        start = index % len(self.urls)
        for attempt in range(o.max_retries + 1):
            if stop.is_set():
                raise _Stopped
            i = self.urls.pick(start, stop)
            start = i + 1  # a retry goes to the next URL after this one
            url = f"{self.urls.urls[i]}/chat/completions"
            try:
                status, headers, body = self._post(url, payload)
            except httpx.TransportError as exc:  # refused, reset, past the deadline
                cause = f"{url}: {type(exc).__name__}: {exc}"
                self.urls.rest(i, self._backoff(attempt))
                continue
            if status == 200:
                try:
                    result = parse_completion(body)
                except Malformed as exc:
                    cause = f"{url}: {exc}"
                    self.urls.rest(i, self._backoff(attempt))
                    if attempt == o.max_retries:
                        return EnhanceResult(text=None, error=f"{BACKEND}: {exc}", requests=attempt + 1)
                    continue
                result.requests = attempt + 1
                return result
            message = server_message(body)
            if status in CONFIG_STATUS:
                stop.set()
                hint = config_hint(status, message, self.model, o.api_key_env)
                raise _Config(f"{url}: HTTP {status}: {message} ({hint})")
            if status in RETRY_STATUS:
                cause = f"{url}: HTTP {status}: {message}"
                wait = retry_after(headers.get("Retry-After"), o.max_retry_after_s)
                self.urls.rest(i, self._backoff(attempt) if wait is None else wait)
                continue
            # another 4xx is about this request (a prompt over the context length): retrying cannot help
            return EnhanceResult(text=None, error=f"{BACKEND}: HTTP {status}: {message}", requests=attempt + 1)
        raise _Down(f"no answer after {o.max_retries + 1} attempts; last: {cause}")

    # -- a batch --------------------------------------------------------------------------------
    def generate(self, requests: list[EnhanceRequest]) -> list[EnhanceResult]:
        stop = threading.Event()
        futures = [self.pool.submit(self._call, i, req, stop) for i, req in enumerate(requests)]
        done: dict[int, EnhanceResult] = {}
        down: list[str] = []
        config: list[str] = []
        for i, future in enumerate(futures):  # wait for all: what completed is kept even when some fail
            try:
                done[i] = future.result()
            except _Down as exc:
                down.append(str(exc))
            except _Config as exc:
                config.append(str(exc))
            except _Stopped:
                pass
        if config:
            raise BackendConfigError(f"{self.name} configuration: {config[0]}; nothing was marked failed: "
                                     f"rerun once it is fixed", done)
        if down:
            raise BackendUnavailable(f"{self.name} server unavailable for {len(down)} of {len(requests)} requests "
                                     f"({down[0]})", done)
        results = [done[i] for i in range(len(requests))]
        self._check_not_uniform(results)
        return results

    def _check_not_uniform(self, results: list[EnhanceResult]) -> None:
        """The same server error for every request of a batch (a gateway's error page, a model that takes no
        images) is about the setup, not the items: storing it per item would freeze it into finished shards."""
        sent = [r for r in results if r.requests]
        errors = {r.error for r in sent if r.text is None and (r.error or "").startswith(f"{BACKEND}:")}
        if len(sent) >= UNIFORM_MIN_REQUESTS and len(errors) == 1 and all(r.text is None and r.error in errors for r in sent):
            (error,) = errors
            raise BackendConfigError(
                f"{self.name}: every one of the {len(sent)} requests of a batch got the same error ({error}): "
                f"a setting or the server, not the items; nothing was marked failed: rerun once it is fixed", {})

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.client.close()

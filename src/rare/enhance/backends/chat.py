"""What the real VLM backends share: chat messages, chat-template rendering, bounded image loading.

The released script built image prompts by hand and an operator-precedence bug left only the
system line (no instruction, no image placeholder). Here every prompt is rendered by the model's
own chat template from structured messages, so the image part and the instruction cannot go missing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from rare.data.images import ImageLoadError, open_image
from rare.enhance.backends.interface import EnhanceRequest
from rare.enhance.checks import IMAGE_UNREADABLE


def fit_pixels(img: Image.Image, max_pixels: int) -> Image.Image:
    """Downscale (aspect kept) so width x height <= max_pixels; visual token counts grow with pixels."""
    w, h = img.size
    if w * h <= max_pixels:
        return img
    scale = math.sqrt(max_pixels / (w * h))
    return img.resize((max(1, math.floor(w * scale)), max(1, math.floor(h * scale))), Image.Resampling.BICUBIC)


def load_image(path: Path, max_pixels: int) -> Image.Image:
    return fit_pixels(open_image(path), max_pixels)


def chat_messages(req: EnhanceRequest) -> list[dict[str, Any]]:
    user: list[dict[str, str]] = [{"type": "image"}] if req.image is not None else []
    user.append({"type": "text", "text": req.instruction})
    messages: list[dict[str, Any]] = []
    if req.system:
        messages.append({"role": "system", "content": [{"type": "text", "text": req.system}]})
    messages.append({"role": "user", "content": user})
    return messages


@dataclass
class Prepared:
    prompt: str
    image: Image.Image | None = None
    error: str | None = None


def prepare(processor: Any, requests: list[EnhanceRequest], max_pixels: int,
            pool: ThreadPoolExecutor | None = None) -> list[Prepared]:
    """Render each request with the chat template and load its image (in ``pool`` when given)."""
    def load(req: EnhanceRequest) -> Image.Image | str | None:
        if req.image is None:
            return None
        try:
            return load_image(req.image, max_pixels)
        except ImageLoadError as exc:
            return f"{IMAGE_UNREADABLE}: {exc}"

    mapper: Callable[[Callable[[EnhanceRequest], Any], Iterable[EnhanceRequest]], Iterable[Any]]
    mapper = pool.map if pool is not None else map  # type: ignore[assignment]
    images = list(mapper(load, requests))
    out = []
    for req, image in zip(requests, images):
        prompt = processor.apply_chat_template(chat_messages(req), tokenize=False, add_generation_prompt=True)
        if isinstance(image, str):
            out.append(Prepared(prompt, error=image))
        else:
            out.append(Prepared(prompt, image))
    return out

"""Turning entries into tensors: tokenisation and CLIP-style PIL image preprocessing (no torchvision).

The collator is a plain picklable object so DataLoader workers (training and evaluation) can
run it; only entries that have text go through the text tower, only those with an image
through the vision tower, and ``*_rows`` say where each result lands in the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image


@dataclass
class EncodeInput:
    text: str                      # "" = no text
    image: Image.Image | None      # None = no image


def preprocess_image(img: Image.Image, size: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """CLIP's recipe: bicubic resize of the short side to ``size``, centre crop, normalise -> [3, size, size]."""
    img = img.convert("RGB")
    w, h = img.size
    if (w, h) != (size, size):
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        img = img.resize((nw, nh), Image.Resampling.BICUBIC)
        left, top = (nw - size) // 2, (nh - size) // 2
        img = img.crop((left, top, left + size, top + size))
    arr = np.asarray(img, dtype=np.float32) / 255.0
    arr = (arr - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


class Collator:
    """list[EncodeInput] -> dict of tensors that ``Retriever.forward`` takes."""

    def __init__(self, tokenizer, max_text_len: int, image_size: int,  # noqa: ANN001 - any HF tokenizer
                 image_mean: Sequence[float], image_std: Sequence[float]):
        self.tokenizer = tokenizer
        self.max_text_len = max_text_len
        self.image_size = image_size
        self.image_mean = tuple(image_mean)
        self.image_std = tuple(image_std)

    def __call__(self, items: Sequence[EncodeInput]) -> dict[str, torch.Tensor]:
        text_rows = [i for i, item in enumerate(items) if item.text]
        image_rows = [i for i, item in enumerate(items) if item.image is not None]
        if text_rows:
            tok = self.tokenizer([items[i].text for i in text_rows], padding=True, truncation=True,
                                 max_length=self.max_text_len, return_tensors="pt")
            input_ids, attention_mask = tok["input_ids"], tok["attention_mask"]
        else:
            input_ids = attention_mask = torch.zeros((0, 1), dtype=torch.long)
        if image_rows:
            pixels = torch.stack([preprocess_image(items[i].image, self.image_size, self.image_mean, self.image_std)
                                  for i in image_rows])
        else:
            pixels = torch.zeros((0, 3, self.image_size, self.image_size))
        return {
            "size": torch.tensor(len(items)),
            "input_ids": input_ids, "attention_mask": attention_mask,
            "text_rows": torch.tensor(text_rows, dtype=torch.long),
            "pixel_values": pixels, "image_rows": torch.tensor(image_rows, dtype=torch.long),
        }

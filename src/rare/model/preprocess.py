"""Turning entries into tensors: tokenisation and OpenAI CLIP's image preprocessing in PIL (no torchvision).

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

from rare.data.images import to_rgb
from rare.data.views import TEXT_FORMATS


@dataclass
class EncodeInput:
    text: str                      # "" = no text
    image: Image.Image | None      # None = no image


def resized_size(w: int, h: int, size: int) -> tuple[int, int]:
    """Short side to ``size``, long side truncated (``int``, not ``round``): rounding shifts the crop by a pixel."""
    if w <= h:
        return size, int(size * h / w)
    return int(size * w / h), size


def crop_offset(resized: int, size: int) -> int:
    """torchvision's ``CenterCrop``: ``int(round((resized - size) / 2.0))``, Python's round (half to even).
    transformers' ``CLIPImageProcessor`` floors instead; on an odd margin that is a pixel off UniIR."""
    return int(round((resized - size) / 2.0))


def preprocess_image(img: Image.Image, size: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """UniIR's image path, operation for operation (the tests require a max abs difference of 0): PIL's
    ``convert("RGB")`` as its dataset opens the file (alpha dropped), then OpenAI ``clip``'s transform: bicubic
    resize of the short side to ``size``, centre crop at torchvision's rounded offset, x/255, then
    (x - mean) / std in float32 -> [3, size, size]."""
    img = to_rgb(img)
    nw, nh = resized_size(*img.size, size)
    img = img.resize((nw, nh), Image.Resampling.BICUBIC)
    top, left = crop_offset(nh, size), crop_offset(nw, size)
    arr = np.asarray(img)[top:top + size, left:left + size].transpose(2, 0, 1)
    arr = (arr.astype(np.float64) * (1 / 255)).astype(np.float32)
    mean_, std_ = (np.asarray(v, dtype=np.float32)[:, None, None] for v in (mean, std))
    return torch.from_numpy(np.ascontiguousarray((arr - mean_) / std_))


class Collator:
    """list[EncodeInput] -> dict of tensors that ``Retriever.forward`` takes."""

    def __init__(self, tokenizer, max_text_len: int, image_size: int,  # noqa: ANN001 - any HF tokenizer
                 image_mean: Sequence[float], image_std: Sequence[float], text_format: str = "none"):
        self.tokenizer = tokenizer
        self.text_format = text_format  # a name, so the collator stays picklable for DataLoader workers
        self.max_text_len = max_text_len
        self.image_size = image_size
        self.image_mean = tuple(image_mean)
        self.image_std = tuple(image_std)

    def __call__(self, items: Sequence[EncodeInput]) -> dict[str, torch.Tensor]:
        fmt = TEXT_FORMATS[self.text_format]
        texts = [fmt(item.text) for item in items]
        text_rows = [i for i, text in enumerate(texts) if text]
        image_rows = [i for i, item in enumerate(items) if item.image is not None]
        if text_rows:
            tok = self.tokenizer([texts[i] for i in text_rows], padding=True, truncation=True,
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

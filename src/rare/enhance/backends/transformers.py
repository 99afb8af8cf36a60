"""Any local Hugging Face VLM through ``generate``: CPU or GPU, batched, greedy (deterministic)."""

from __future__ import annotations

from typing import Any

from rare.enhance.backends.chat import Prepared, prepare
from rare.enhance.backends.interface import EnhanceRequest, EnhanceResult


class TransformersBackend:
    name = "transformers"

    def __init__(self, model: str, device: str = "auto", dtype: str = "auto", max_pixels: int = 1_003_520,
                 seed: int = 0):
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.model = model
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        self.max_pixels = max_pixels
        self.seed = seed
        self.processor = AutoProcessor.from_pretrained(model)
        self.tokenizer = self.processor.tokenizer
        self.tokenizer.padding_side = "left"  # decoder-only batching: prompts end where generation starts
        torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
        self.net = AutoModelForImageTextToText.from_pretrained(model, dtype=torch_dtype).to(self.device).eval()
        eos = self.net.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else next(iter(self.eos_ids))

    def prepare(self, requests: list[EnhanceRequest]) -> list[Prepared]:
        return prepare(self.processor, requests, self.max_pixels)

    def generate(self, requests: list[EnhanceRequest]) -> list[EnhanceResult]:
        prepared = self.prepare(requests)
        results: list[EnhanceResult | None] = [None] * len(requests)
        groups: dict[tuple[bool, int], list[int]] = {}  # a processor call takes all-image or all-text batches
        for i, (req, prep) in enumerate(zip(requests, prepared)):
            if prep.error is not None:
                results[i] = EnhanceResult(text=None, error=prep.error)
            else:
                groups.setdefault((prep.image is not None, req.max_new_tokens), []).append(i)
        for (has_image, cap), idx in groups.items():
            for i, res in zip(idx, self._run([prepared[i] for i in idx], has_image, cap)):
                results[i] = res
        return [r for r in results if r is not None]

    def _run(self, batch: list[Prepared], has_image: bool, cap: int) -> list[EnhanceResult]:
        import torch

        kwargs: dict[str, Any] = {"text": [p.prompt for p in batch], "padding": True, "return_tensors": "pt"}
        if has_image:
            kwargs["images"] = [p.image for p in batch]
        enc = self.processor(**kwargs).to(self.device)
        if "pixel_values" in enc:
            enc["pixel_values"] = enc["pixel_values"].to(self.net.dtype)
        torch.manual_seed(self.seed)
        with torch.inference_mode():
            out = self.net.generate(**enc, max_new_tokens=cap, do_sample=False, pad_token_id=self.pad_id)
        new = out[:, enc["input_ids"].shape[1]:].tolist()
        results = []
        for row, mask in zip(new, enc["attention_mask"].tolist()):
            stop = next((j for j, t in enumerate(row) if t in self.eos_ids), None)
            ids = row if stop is None else row[:stop]
            results.append(EnhanceResult(
                text=self.tokenizer.decode(ids, skip_special_tokens=True),
                tokens_in=int(sum(mask)), tokens_out=len(ids) + (stop is not None),
                finish_reason="stop" if stop is not None else "length",
            ))
        return results

    def close(self) -> None:
        self.net = None

"""vLLM offline batched generation for real runs (the optional ``vllm`` extra; needs a GPU).

vllm is imported when the backend is built, never at module import. Prompts come from the HF
processor's chat template; images are decoded and downscaled to ``max_pixels`` in a thread pool
while the engine runs; decoding is greedy with a fixed seed.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from rare.enhance.backends.base import EnhanceRequest, EnhanceResult
from rare.enhance.backends.vlm import Prepared, prepare


class VLLMBackend:
    name = "vllm"

    def __init__(self, model: str, *, max_model_len: int = 16384, limit_mm_per_prompt: int = 1,
                 gpu_memory_utilization: float = 0.9, tensor_parallel_size: int = 1, dtype: str = "auto",
                 max_pixels: int = 1_003_520, seed: int = 0, image_workers: int = 8):
        try:
            import vllm
        except ImportError as exc:
            raise ValueError(f"enhance.backend 'vllm' needs the optional extra: pip install 'rare[vllm]' ({exc})") from None
        from transformers import AutoProcessor

        self.model = model
        self.seed = seed
        self.max_pixels = max_pixels
        self._sampling_params = vllm.SamplingParams
        self.processor = AutoProcessor.from_pretrained(model)
        self.llm = vllm.LLM(
            model=model, max_model_len=max_model_len, limit_mm_per_prompt={"image": limit_mm_per_prompt},
            gpu_memory_utilization=gpu_memory_utilization, tensor_parallel_size=tensor_parallel_size,
            dtype=dtype, seed=seed,
        )
        self.pool = ThreadPoolExecutor(image_workers, thread_name_prefix="vllm-images")

    def sampling(self, max_tokens: int) -> Any:
        return self._sampling_params(temperature=0.0, top_p=1.0, max_tokens=max_tokens, seed=self.seed)

    def prepare(self, requests: list[EnhanceRequest]) -> list[Prepared]:
        return prepare(self.processor, requests, self.max_pixels, self.pool)

    def generate(self, requests: list[EnhanceRequest]) -> list[EnhanceResult]:
        prepared = self.prepare(requests)
        results: list[EnhanceResult | None] = [None] * len(requests)
        inputs, params, idx = [], [], []
        for i, (req, prep) in enumerate(zip(requests, prepared)):
            if prep.error is not None:
                results[i] = EnhanceResult(text=None, error=prep.error)
                continue
            prompt: dict[str, Any] = {"prompt": prep.prompt}
            if prep.image is not None:
                prompt["multi_modal_data"] = {"image": prep.image}
            inputs.append(prompt)
            params.append(self.sampling(req.max_new_tokens))
            idx.append(i)
        if inputs:
            outputs = self.llm.generate(inputs, sampling_params=params, use_tqdm=False)
            for i, out in zip(idx, outputs):
                done = out.outputs[0]
                results[i] = EnhanceResult(
                    text=done.text, tokens_in=len(out.prompt_token_ids or ()), tokens_out=len(done.token_ids),
                    finish_reason=done.finish_reason,
                )
        return [r for r in results if r is not None]

    def close(self) -> None:
        self.pool.shutdown(wait=False)
        self.llm = None

"""The vLLM backend up to the engine call, against vLLM's documented input types (a fake ``vllm``).

What is checked is exactly what the backend hands vLLM: the ``LLM(...)`` and ``SamplingParams(...)``
keyword arguments and the list of ``{"prompt": str, "multi_modal_data": {"image": PIL.Image}}``.
The real engine runs only where CUDA and vllm exist (``gpu`` marker).
"""

import importlib.util
import sys
import types
from pathlib import Path

import pytest
import torch
from PIL import Image

from rare.config.enhance import EnhanceParams
from rare.enhance.backends import make_backend
from rare.enhance.backends.base import EnhanceRequest
from rare.enhance.prompts import PromptSet

PROMPTS = PromptSet.load("v1")


def request(op, side, text="", image=None):
    t = PROMPTS.template(op, side)
    return EnhanceRequest(key=f"k-{op}", op=op, side=side, text=text, image=image, system=t.system,
                          instruction=t.render(text), max_new_tokens=512 if side == "corpus" else 128)


class FakeVLLM(types.ModuleType):
    """Records every object the backend builds; answers like vLLM's RequestOutput."""

    def __init__(self):
        super().__init__("vllm")
        self.llm_kwargs, self.sampling_kwargs, self.calls = [], [], []
        module = self

        class LLM:
            def __init__(self, **kwargs):
                module.llm_kwargs.append(kwargs)

            def generate(self, prompts, sampling_params=None, use_tqdm=True):
                module.calls.append({"prompts": prompts, "sampling_params": sampling_params, "use_tqdm": use_tqdm})
                return [types.SimpleNamespace(
                    prompt_token_ids=list(range(11 + i)),
                    outputs=[types.SimpleNamespace(text=f" answer {i} ", token_ids=[1, 2, 3],
                                                   finish_reason="length" if i == 2 else "stop")],
                ) for i, _ in enumerate(prompts)]

        class SamplingParams:
            def __init__(self, **kwargs):
                module.sampling_kwargs.append(kwargs)
                self.kwargs = kwargs

        self.LLM, self.SamplingParams = LLM, SamplingParams


@pytest.fixture
def fake_vllm(monkeypatch):
    fake = FakeVLLM()
    monkeypatch.setitem(sys.modules, "vllm", fake)
    return fake


def test_vllm_backend_passes_documented_inputs(fake_vllm, tiny_vlm, tmp_path):  # noqa: F811
    img = tmp_path / "photo.png"
    Image.new("RGB", (300, 200), "blue").save(img)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    params = EnhanceParams(backend="vllm", model=str(tiny_vlm), seed=7, max_pixels=6000,
                           vllm={"max_model_len": 16384, "gpu_memory_utilization": 0.8, "image_workers": 2})
    backend = make_backend(params)
    assert (backend.name, backend.model) == ("vllm", str(tiny_vlm))
    assert fake_vllm.llm_kwargs == [{
        "model": str(tiny_vlm), "max_model_len": 16384, "limit_mm_per_prompt": {"image": 1},
        "gpu_memory_utilization": 0.8, "tensor_parallel_size": 1, "dtype": "auto", "seed": 7,
    }]
    reqs = [request("caption", "corpus", image=img), request("rewrite", "query", "now with a red hat"),
            request("resolve", "query", "what breed is this dog?", img), request("caption", "query", image=bad)]
    results = backend.generate(reqs)

    (call,) = fake_vllm.calls
    assert call["use_tqdm"] is False
    sent = call["prompts"]
    assert len(sent) == 3  # the unreadable image never reaches the engine
    for prompt, req in zip(sent, reqs[:3]):
        assert isinstance(prompt["prompt"], str)
        assert req.system in prompt["prompt"] and req.instruction in prompt["prompt"]
        if req.image is None:
            assert set(prompt) == {"prompt"} and "<image>" not in prompt["prompt"]
        else:
            assert set(prompt) == {"prompt", "multi_modal_data"} and set(prompt["multi_modal_data"]) == {"image"}
            image = prompt["multi_modal_data"]["image"]
            assert isinstance(image, Image.Image) and image.mode == "RGB"
            assert image.width * image.height <= 6000 and abs(image.width / image.height - 1.5) < 0.05
            assert prompt["prompt"].count("<image>") == 1
    assert [p.kwargs for p in call["sampling_params"]] == [
        {"temperature": 0.0, "top_p": 1.0, "max_tokens": 512, "seed": 7},
        {"temperature": 0.0, "top_p": 1.0, "max_tokens": 128, "seed": 7},
        {"temperature": 0.0, "top_p": 1.0, "max_tokens": 128, "seed": 7},
    ]
    assert [r.text for r in results[:3]] == [" answer 0 ", " answer 1 ", " answer 2 "]
    assert [(r.tokens_in, r.tokens_out, r.finish_reason) for r in results[:3]] == [
        (11, 3, "stop"), (12, 3, "stop"), (13, 3, "length")]
    assert results[3].text is None and results[3].error.startswith("image_unreadable: ")
    backend.close()


def test_vllm_is_imported_only_when_chosen(monkeypatch, tiny_vlm):  # noqa: F811
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` raise ImportError
    import rare.enhance.backends.vllm as module  # importing the module never needs vllm

    with pytest.raises(ValueError, match=r"needs the optional extra: pip install 'rare\[vllm\]'"):
        module.VLLMBackend(str(tiny_vlm))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or importlib.util.find_spec("vllm") is None,
                    reason="needs CUDA and the vllm extra")
def test_real_vllm_engine_on_the_tiny_vlm(tiny_vlm, tmp_path):  # noqa: F811
    img = tmp_path / "photo.png"
    Image.new("RGB", (64, 48), "green").save(img)
    params = EnhanceParams(backend="vllm", model=str(tiny_vlm), vllm={"max_model_len": 1024,
                                                                       "gpu_memory_utilization": 0.3})
    backend = make_backend(params)
    reqs = [request("caption", "corpus", image=Path(img)), request("rewrite", "query", "with a red hat")]
    first, second = backend.generate(reqs), backend.generate(reqs)
    assert all(r.text is not None and r.tokens_in > 0 for r in first)
    assert [r.text for r in first] == [r.text for r in second]  # greedy + fixed seed
    backend.close()

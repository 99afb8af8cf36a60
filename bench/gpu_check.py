"""The prepared GPU check (issue 8): three figures rare can only measure on a GPU, in one run of ~3-5 min.

(a) train   samples/s of a CLIP ViT-L/14 retriever (224 px, 77 tokens, random weights from a
            ``CLIPConfig``: no hub there) built by rare's own ``build_retriever`` and trained by
            ``RetrieverModule`` (its in-batch contrastive loss), bf16 autocast, UniIR's batch of 105
            per GPU. Every query and candidate has text and image (CLIP_SF's heaviest case), from
            synthetic tensors. The plain torch loop's samples/s against what the bf16 matmul rate
            measured here allows for the step's FLOPs (counted by torch's FlopCounterMode; the ratio
            is the model FLOP utilisation); the Lightning loop against the plain one; peak memory.
(b) search  ``rare.evaluate.search.search(..., device="cuda")`` over 5,609,079 x 768 fp16 unit rows
            streamed from a .npy on disk (the M-BEIR global pool; from host memory if the disk is
            short), 10,000 queries, top-10, with the
            ``evaluate:`` defaults and the ``mbeir`` profile's query_batch/cand_chunk, against the
            practical matmul limits measured here (8192^3 bf16, fp16, TF32, fp32); the time spent
            only reading the chunks; ids checked against a brute-force top-10 on 64 queries.
(c) caption the ``transformers`` enhancement backend on a tiny random LLaVA
            (``tests/fixtures/enhance.make_tiny_vlm``), bf16: items/s and tokens/s at batch 64 vs batch 1.
(d) serve   the ``openai`` enhancement backend against a real ``vllm serve`` process on the same tiny
            LLaVA (the README's flags: image-only limits, seed, ``VLLM_BATCH_INVARIANT=1``): both sides
            of a tiny M-BEIR root, twice, at concurrency 32 and 1; outputs byte-identical. Needs vllm in
            the device image (and httpx, which vllm depends on); without it the part records why.
(e) vlm     the ``vlm`` family (docs/vlm.md) on a Qwen2-VL-2B-size config with random weights, bf16, LoRA r128,
            gradient checkpointing, 32 pairs of ~300 visual + ~60 text tokens: samples/s of the plain loop,
            Lightning vs plain, GradCache vs none (time and peak memory), embedding items/s. Needs peft in the
            device image (carry its wheel like pydantic's). NOT RUN YET: no device was lent to the session that
            wrote it; ``--smoke vlm`` runs here.

One row per figure (bench/common.py); with ``$OUT`` set, everything goes to ``$OUT/gpu_check.json``
(rewritten after each part, so a timeout keeps the parts already done). A part that fails
records its traceback and the others still run. ``--smoke`` runs every part with tiny sizes on
whatever device there is (CPU here), to prove the code before spending device time.

Imports nothing of prefect, mlflow, dvc, faiss or ray. The H200 image lacks only pydantic (rare.config)
and its dependencies, carried as wheels. Once, here, in the repo root (.whl/ is git-ignored):

    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
      pydantic==2.14.4 pydantic_core==2.50.5 annotated_types==0.8.0 typing_inspection==0.4.5 \
      typing_extensions==4.16.0

(about 2.8 MB; typing_extensions travels because pydantic needs >= 4.16). Then one device ``run``,
with ``carry: [".whl"]`` and ``timeout_s: 480``:

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit; set -o pipefail; PYTHONUNBUFFERED=1 python3 bench/gpu_check.py 2>&1 | tee $OUT/gpu_check.log

Here: `python bench/gpu_check.py --smoke` (about a minute on 2 cores).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]  # no install needed on the device machine

from rare import runtime  # noqa: E402

runtime.configure()

import torch  # noqa: E402

from bench.common import print_rows, row  # noqa: E402

WARMUP = 3
GIB = 2**30


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def free(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def matmul_tflops(dtype: torch.dtype, n: int, device: str, precision: str = "highest", repeats: int = 10) -> float:
    """Best sustained square matmul: the practical limit a search or a training step can approach.
    ``precision`` is torch's float32 matmul precision: "highest" = true fp32, "high" = TF32."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        a, b = torch.randn(2, n, n, device=device).to(dtype)
        for _ in range(WARMUP):
            a @ b
        sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        sync(device)
        return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e12
    finally:
        torch.set_float32_matmul_precision(before)


# (a) training -----------------------------------------------------------------------------------------

def clip_params(tokenizer_dir: Path, smoke: bool) -> Any:
    """UniIR's CLIP ViT-L/14 as a bare config (random init), or a miniature of it for --smoke."""
    from rare.config.train import ModelParams, TowerSource

    if smoke:
        text = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
        vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                  "image_size": 32, "patch_size": 8}
        projection = 32
    else:
        text = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12}
        vision = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                  "num_attention_heads": 16, "image_size": 224, "patch_size": 14}
        projection = 768
    text |= {"vocab_size": 49408, "max_position_embeddings": 77}
    config = {"model_type": "clip", "text_config": text, "vision_config": vision, "projection_dim": projection}
    return ModelParams(family="clip", clip=TowerSource(config=config), tokenizer=str(tokenizer_dir), max_text_len=77,
                       train_text_layers=None)


def synthetic_batch(size: int, image_size: int, seq: int = 77, vocab: int = 49408) -> dict[str, dict[str, Any]]:
    """What PairDataModule yields, for rows that all have text and an image, on the CPU like a loader's."""
    gen = torch.Generator().manual_seed(0)

    def side() -> dict[str, torch.Tensor]:
        return {"size": torch.tensor(size), "input_ids": torch.randint(0, vocab, (size, seq), generator=gen),
                "attention_mask": torch.ones(size, seq, dtype=torch.long), "text_rows": torch.arange(size),
                "pixel_values": torch.randn(size, 3, image_size, image_size, generator=gen),
                "image_rows": torch.arange(size)}

    return {"query": side(), "cand": side()}


def to_device(batch: dict[str, dict[str, torch.Tensor]], device: str) -> dict[str, dict[str, torch.Tensor]]:
    return {name: {k: v.to(device) for k, v in side.items()} for name, side in batch.items()}


def durations(ends: list[float]) -> list[float]:
    return [b - a for a, b in zip(ends[WARMUP - 1:], ends[WARMUP:])]


def plain_loop(module: Any, batch: dict[str, Any], steps: int, device: str) -> list[float]:
    """The step Lightning runs, written out: batch to the device, bf16 autocast forward, backward, AdamW."""
    opt = module.configure_optimizers()
    optimizer, scheduler = opt["optimizer"], opt["lr_scheduler"]["scheduler"]
    ends = []
    for step in range(WARMUP + steps):
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = module.training_step(to_device(batch, device), step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        sync(device)
        ends.append(time.perf_counter())
    return durations(ends)


def lightning_loop(module: Any, batch: dict[str, Any], steps: int, device: str) -> list[float]:
    import pytorch_lightning as pl

    class Clock(pl.Callback):
        def __init__(self) -> None:
            self.ends: list[float] = []

        def on_train_batch_end(self, *args: Any) -> None:
            sync(device)
            self.ends.append(time.perf_counter())

    clock = Clock()
    trainer = pl.Trainer(accelerator="gpu" if device == "cuda" else "cpu", devices=1, precision="bf16-mixed",
                         max_steps=WARMUP + steps, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         num_sanity_val_steps=0, callbacks=[clock])
    loader = torch.utils.data.DataLoader([batch] * (WARMUP + steps), batch_size=None)
    trainer.fit(module, train_dataloaders=loader)
    return durations(clock.ends)


def step_flops(module: Any, batch: dict[str, Any], device: str) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = module._loss(to_device(batch, device))
        loss.backward()
    module.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def train_rows(smoke: bool, device: str) -> list[dict[str, Any]]:
    import logging

    from rare.config.train import OptimParams
    from rare.model import build_retriever
    from rare.train.module import RetrieverModule
    from tests.fixtures.models import make_tiny_tokenizer

    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    size, steps = (8, 3) if smoke else (105, 10)
    optim = OptimParams(lr=1e-5, lr_new=None)  # the mbeir profile's
    with tempfile.TemporaryDirectory(prefix="gpu-check-tok-") as tmp:
        params = clip_params(make_tiny_tokenizer(Path(tmp) / "tokenizer"), smoke)
        torch.manual_seed(0)
        with torch.device(device):  # initialise on the GPU: a CPU init of 428M parameters takes a while
            retriever = build_retriever(params)
    n_params = sum(p.numel() for p in retriever.parameters())
    batch = synthetic_batch(size, retriever.spec["image_size"])
    flops = step_flops(RetrieverModule(retriever, optim, total_steps=1000), batch, device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    plain = float(np.median(plain_loop(RetrieverModule(retriever, optim, total_steps=1000), batch, steps, device)))
    peak = torch.cuda.max_memory_allocated() / GIB if device == "cuda" else 0.0
    free(device)
    light = float(np.median(lightning_loop(RetrieverModule(retriever, optim, total_steps=1000), batch, steps, device)))
    n = 512 if smoke else 8192
    limit = matmul_tflops(torch.bfloat16, n, device)
    model = f"CLIP {'miniature' if smoke else 'ViT-L/14'} ({n_params / 1e6:.0f}M params)"
    rows = [
        row(f"gpu train: {model}, bf16, batch {size}, plain loop (samples/s) vs its {flops / size / 1e9:.1f} "
            f"GFLOP/sample at the {n}^3 bf16 matmul rate ({limit:.0f} TFLOP/s)", size / plain,
            limit * 1e12 / (flops / size), "smp/s", None, better="higher"),
        row("  Lightning loop vs plain loop (samples/s)", size / light, size / plain, "smp/s", 0.95, better="higher"),
    ]
    if device == "cuda":
        total = torch.cuda.get_device_properties(0).total_memory / GIB
        rows.append(row("  peak GPU memory, plain loop (GiB) vs the card's", peak, total, "GiB", None))
    return rows


# (b) exact search -------------------------------------------------------------------------------------

def unit_rows(n: int, d: int, device: str, seed: int) -> torch.Tensor:
    gen = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(n, d, device=device, generator=gen)
    return x / x.norm(dim=1, keepdim=True)


def make_pool(n: int, d: int, device: str, chunk: int = 1 << 20) -> np.ndarray:
    """Random unit rows as fp16 (8.6 GB at full size: the host has 128 GiB), made on the device chunk by chunk."""
    out = np.empty((n, d), dtype=np.float16)
    for i, a in enumerate(range(0, n, chunk)):
        out[a:a + chunk] = unit_rows(min(chunk, n - a), d, device, seed=1 + i).half().cpu().numpy()
    return out


def brute_force(queries: np.ndarray, cands: np.ndarray, k: int, device: str, chunk: int = 1 << 20) -> np.ndarray:
    """Top-k rows of every score, computed the plain way (for the ids check)."""
    q = torch.from_numpy(queries).to(device)
    vals, rows = [], []
    for a in range(0, len(cands), chunk):
        s = q @ torch.from_numpy(np.ascontiguousarray(cands[a:a + chunk])).to(device).float().T
        v, i = s.topk(min(k, s.shape[1]), dim=1)
        vals.append(v)
        rows.append(i + a)
    v, i = torch.cat(vals, dim=1), torch.cat(rows, dim=1)
    return i.gather(1, v.topk(k, dim=1).indices).cpu().numpy()


def search_rows(smoke: bool, device: str) -> list[dict[str, Any]]:
    from rare.config.evaluate import EvaluateParams
    from rare.evaluate.search import iter_chunks, search

    n, d, nq, k = (50_000, 64, 512, 10) if smoke else (5_609_079, 768, 10_000, 10)
    defaults = EvaluateParams()
    settings = {"evaluate defaults": (defaults.query_batch, defaults.cand_chunk),
                "mbeir profile": (4096, 1_048_576)}  # params.yaml profiles.mbeir.evaluate
    size = 512 if smoke else 8192  # square matmul side
    limits = {"bf16": matmul_tflops(torch.bfloat16, size, device), "fp16": matmul_tflops(torch.float16, size, device),
              "TF32": matmul_tflops(torch.float32, size, device, "high"),
              "fp32": matmul_tflops(torch.float32, size, device, "highest")}
    queries = unit_rows(nq, d, device, seed=0).cpu().numpy()
    search(queries[:64], unit_rows(4096, d, device, seed=2).cpu().numpy(), k, device=device)  # warm-up
    cands = make_pool(n, d, device)
    tmp = Path(tempfile.mkdtemp(prefix="gpu-check-pool-"))  # $TMPDIR, else /tmp
    try:
        # Evaluation streams the global pool from its .npy; short of disk, the figure still comes, from memory.
        source: np.ndarray | Path = cands
        where = f"in host memory ({shutil.disk_usage(tmp).free / GIB:.0f} GiB disk free)"
        if shutil.disk_usage(tmp).free > cands.nbytes + 2 * GIB:
            source, where = tmp / "pool.npy", "from disk"
            np.save(source, cands)
        seconds, found = {}, {}
        for name, (qb, chunk) in settings.items():
            start = time.perf_counter()
            _, found[name] = search(queries, source, k, device=device, query_batch=qb, cand_chunk=chunk)
            seconds[name] = time.perf_counter() - start
        start = time.perf_counter()
        for _ in iter_chunks([source], settings["mbeir profile"][1]):
            pass
        reading = time.perf_counter() - start
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    sample = np.linspace(0, nq - 1, 64).astype(int)
    truth = brute_force(queries[sample], cands, k, device)
    same = int((found["mbeir profile"][sample] == truth).all(axis=1).sum())
    agree = int((found["mbeir profile"] == found["evaluate defaults"]).all(axis=1).sum())
    flops = 2.0 * n * d * nq
    fp32 = limits["fp32"]
    rows = []
    for name, (qb, chunk) in settings.items():
        rows.append(row(f"gpu search: {n / 1e6:.2f}M x {d} fp16 {where}, {nq} queries, top-{k}, {name} "
                        f"(query_batch {qb}, cand_chunk {chunk}) (queries/s) vs the fp32 matmul limit",
                        nq / seconds[name], fp32 * 1e12 / (2.0 * n * d), "q/s", None, better="higher"))
    rows += [
        row(f"  search TFLOP/s (mbeir profile) vs {size}^3 fp32 matmul", flops / seconds["mbeir profile"] / 1e12,
            fp32, "TF/s", None, better="higher"),
        *(row(f"  {size}^3 {name} matmul vs fp32 (TFLOP/s)", limits[name], fp32, "TF/s", None, better="higher")
          for name in ("TF32", "fp16", "bf16")),
        row("  reading the chunks alone vs the whole search (mbeir profile) (s)", reading, seconds["mbeir profile"],
            "s", None),
        row("  ids identical to a brute-force top-k (of 64 sampled queries)", same, 64, "q", 1.0, better="higher"),
        row(f"  ids identical between the two settings (of {nq} queries)", agree, nq, "q", 1.0, better="higher"),
    ]
    return rows


# (c) captioning ---------------------------------------------------------------------------------------

def caption_rows(smoke: bool, device: str) -> list[dict[str, Any]]:
    from PIL import Image

    from rare.config.ops import CAPTION
    from rare.enhance.backends.interface import EnhanceRequest
    from rare.enhance.backends.transformers import TransformersBackend
    from tests.fixtures.enhance import make_tiny_vlm

    n, batch, tokens = (8, 4, 8) if smoke else (128, 64, 32)
    with tempfile.TemporaryDirectory(prefix="gpu-check-vlm-") as tmp:
        requests = []
        for i in range(n):
            image = Path(tmp) / f"{i}.png"
            Image.new("RGB", (64, 64), (i * 2 % 256, 255 - i * 2 % 256, 128)).save(image)
            requests.append(EnhanceRequest(key=str(i), op=CAPTION, side="corpus", text="", image=image,
                                           system="You describe images for retrieval.",
                                           instruction=f"Describe image {i} in detail.", max_new_tokens=tokens))
        backend = TransformersBackend(str(make_tiny_vlm(Path(tmp) / "vlm")), device=device,
                                      dtype="bfloat16" if device == "cuda" else "float32")

        def timed(size: int) -> tuple[float, int]:
            backend.generate(requests[:size])  # warm-up at this batch size
            sync(device)
            start, out = time.perf_counter(), 0
            for a in range(0, n, size):
                out += sum(r.tokens_out for r in backend.generate(requests[a:a + size]))
            sync(device)
            return time.perf_counter() - start, out

        one_s, one_tok = timed(1)
        many_s, many_tok = timed(batch)
        backend.close()
    return [
        row(f"gpu caption: tiny LLaVA, transformers backend, {n} images, <= {tokens} new tokens, batch {batch} "
            "vs batch 1 (items/s)", n / many_s, n / one_s, "it/s", None, better="higher"),
        row(f"  generated tokens/s, batch {batch} vs batch 1 ({many_tok} and {one_tok} tokens)", many_tok / many_s,
            one_tok / one_s, "tok/s", None, better="higher"),
    ]


# (d) the openai backend against a real `vllm serve` ------------------------------------------------------

def start_vllm_serve(model: Path, port: int, log: Path) -> Any:
    """The README's command, scaled to a tiny model: image-only limits, fixed seed, batch invariance."""
    import subprocess

    import httpx

    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
           "--served-model-name", "tiny-llava", "--host", "127.0.0.1", "--port", str(port),
           "--max-model-len", "2048", "--limit-mm-per-prompt", '{"image": 1, "video": 0}', "--seed", "0",
           "--generation-config", "vllm", "--gpu-memory-utilization", "0.3", "--enforce-eager"]
    env = {**os.environ, "VLLM_BATCH_INVARIANT": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"vllm serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(2)
    proc.kill()
    raise RuntimeError(f"vllm serve not healthy after 300 s:\n{log.read_text()[-3000:]}")


def serve_rows(smoke: bool, device: str) -> list[dict[str, Any]]:
    """Both sides of a tiny M-BEIR root through ``enhance.backend: openai``, twice, with different concurrency
    and fresh caches: the outputs must be byte-identical (greedy, seed, VLLM_BATCH_INVARIANT=1). --smoke
    stands the scripted test server (tests/fixtures/openai_server.py) where vllm serve would be."""
    import importlib.util
    import socket

    from rare.config.enhance import EnhanceParams
    from rare.enhance.side import enhance_side
    from tests.fixtures.enhance import make_tiny_vlm
    from tests.fixtures.openai_server import ScriptedServer
    from tests.fixtures.tiny_root import make_tiny_root

    if not smoke and importlib.util.find_spec("vllm") is None:
        raise RuntimeError("vllm is not installed here: `vllm serve` needs its own environment (README)")
    with tempfile.TemporaryDirectory(prefix="gpu-check-serve-") as tmp:
        tmp_path = Path(tmp)
        root = make_tiny_root(tmp_path / "M-BEIR")
        if smoke:
            server = ScriptedServer(model="tiny-llava").start()
            url, model = server.url, "tiny-llava"
        else:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            server = start_vllm_serve(make_tiny_vlm(tmp_path / "vlm"), port, tmp_path / "vllm.log")
            url, model = f"http://127.0.0.1:{port}/v1", "tiny-llava"
        try:
            trees, seconds, items = [], [], 0
            for run, concurrency in enumerate((32, 1)):
                params = EnhanceParams(backend="openai", model=model, cache_dir=str(tmp_path / f"cache{run}"),
                                       shard_size=16, batch_size=32, max_new_tokens={"corpus": 24, "query": 16},
                                       max_failure_rate=1.0,
                                       openai={"base_urls": [url], "max_concurrency": concurrency, "timeout_s": 120})
                start = time.perf_counter()
                outcomes = [enhance_side(params, root, tmp_path / f"out{run}/{side}", side, progress=False)
                            for side in ("corpus", "queries")]
                seconds.append(time.perf_counter() - start)
                items = sum(o.summary["enhanceable"] for o in outcomes)
                failed = sum(o.summary["failed"] for o in outcomes)
                out = tmp_path / f"out{run}"
                trees.append({p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.jsonl"))})
        finally:
            if smoke:
                server.stop()
            else:
                server.terminate()
                server.wait(timeout=60)
    where = "scripted server (smoke)" if smoke else "vllm serve, tiny LLaVA"
    same = sum(trees[0][k] == trees[1].get(k) for k in trees[0])
    return [
        row(f"gpu serve: {where}, {items} enhanceable items, concurrency 32 vs 1 (items/s)", items / seconds[0],
            items / seconds[1], "it/s", None, better="higher"),
        row("  output files byte-identical between the two runs", same, len(trees[0]), "files", 1.0, better="higher"),
        row("  items failed in the second run", failed, max(items, 1), "items", 0.0),
    ]



# (e) the vlm family -----------------------------------------------------------------------------------

QWEN2VL_2B = {  # Qwen2-VL-2B-Instruct's architecture (random weights: nothing downloadable there)
    "text_config": {"hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28, "num_attention_heads": 12,
                    "num_key_value_heads": 2, "max_position_embeddings": 32768, "vocab_size": 151936,
                    "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]}},
    "vision_config": {"depth": 32, "embed_dim": 1280, "hidden_size": 1536, "num_heads": 16, "mlp_ratio": 4,
                      "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "in_channels": 3},
}


def vlm_items(n: int, smoke: bool) -> tuple[list[Any], list[Any]]:
    """Queries and candidates as LamRA's M-BEIR stage feeds them: ~300 visual tokens (560x420 px) + ~60 text."""
    from PIL import Image

    from rare.model import EncodeInput

    rng = np.random.RandomState(0)
    w, h = (56, 56) if smoke else (560, 420)
    words = "the a red blue green circle square photo of on with near small large old new".split()

    def text(k: int) -> str:
        return " ".join(rng.choice(words, k))

    def image() -> Image.Image:
        return Image.fromarray((rng.rand(h, w, 3) * 255).astype("uint8"))

    queries = [EncodeInput(f"Retrieve a photo that matches the caption. {text(40)}", image()) for _ in range(n)]
    cands = [EncodeInput(text(30), image()) for _ in range(n)]
    return queries, cands


def vlm_rows(smoke: bool, device: str) -> list[dict[str, Any]]:
    """(e) LamRA-Ret's stage-2 setup on a Qwen2-VL-2B-size model: LoRA r128 on the 7 LLM linears, vision frozen,
    bf16 weights, gradient checkpointing, sdpa: samples/s of the plain loop and of Lightning, peak memory with and
    without GradCache, and embedding throughput (items/s) in evaluation."""
    import logging

    from rare.config.train import ModelParams, OptimParams
    from rare.model import build_retriever
    from rare.train.module import RetrieverModule
    from tests.vlm_tiny import qwen2vl_config, save_tiny, tiny_tokenizer

    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    size, steps, chunk = (4, 2, 2) if smoke else (32, 4, 8)
    optim = OptimParams(lr=1e-4, lr_new=None, weight_decay=0.0, betas=(0.9, 0.999), eps=1e-8)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="gpu-check-vlm-") as tmp:
        if smoke:
            base = save_tiny(Path(tmp) / "ckpt", "qwen2_vl")
        else:
            from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

            tok = tiny_tokenizer()  # the Qwen special tokens; the model keeps the 2B's width and depth
            ids = qwen2vl_config(tok).to_dict()
            cfg = Qwen2VLConfig(**{**QWEN2VL_2B, **{k: ids[k] for k in ("image_token_id", "video_token_id",
                                                                         "vision_start_token_id", "vision_end_token_id")}})
            with torch.device(device):
                Qwen2VLForConditionalGeneration(cfg).to(torch.bfloat16).save_pretrained(Path(tmp) / "ckpt")
            tok.save_pretrained(Path(tmp) / "ckpt")
            base = Path(tmp) / "ckpt"
        vlm = {"model": {"pretrained": str(base)}, "lora": {"r": 8 if smoke else 128, "alpha": 16 if smoke else 256,
                                                            "dropout": 0.05},
               "dtype": "float32" if smoke else "bfloat16", "gradient_checkpointing": True}
        torch.manual_seed(0)
        retriever = build_retriever(ModelParams(family="vlm", vlm=vlm)).to(device)
        n_params = sum(p.numel() for p in retriever.parameters())
        n_lora = sum(p.numel() for p in retriever.parameters() if p.requires_grad)
        col = retriever.collator()
        q, c = vlm_items(size, smoke)
        batch = {"query": col(q), "cand": col(c)}
        tokens = int(batch["query"]["attention_mask"].sum() + batch["cand"]["attention_mask"].sum()) / (2 * size)
        results = {}
        for label, gc_chunk in (("plain", None), ("gradcache", chunk)):
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            module = RetrieverModule(retriever, optim, total_steps=1000, grad_cache_chunk=gc_chunk)
            times = vlm_plain_loop(module, batch, steps, device, gc_chunk)
            peak = torch.cuda.max_memory_allocated() / GIB if device == "cuda" else 0.0
            results[label] = (float(np.median(times)), peak)
            free(device)
        light = float(np.median(lightning_loop(RetrieverModule(retriever, optim, total_steps=1000), batch, steps,
                                               device)))
        retriever.eval()
        items = q + c
        with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16):
            emb_batch = col(items)
            retriever(emb_batch)
            sync(device)
            t0 = time.perf_counter()
            for _ in range(steps):
                retriever(emb_batch)
            sync(device)
            emb_rate = len(items) * steps / (time.perf_counter() - t0)
            t0 = time.perf_counter()
            col(items)
            collate_rate = len(items) / (time.perf_counter() - t0)
    (p, p_peak), (g, g_peak) = results["plain"], results["gradcache"]
    model = f"Qwen2-VL {'miniature' if smoke else '2B-size'} ({n_params / 1e6:.0f}M params, {n_lora / 1e6:.1f}M LoRA)"
    rows += [
        row(f"gpu vlm: {model}, {tokens:.0f} tokens/item, batch {size} pairs, plain loop (samples/s)", size / p, size / p,
            "smp/s", None, better="higher"),
        row("  Lightning loop vs plain loop (samples/s)", size / light, size / p, "smp/s", 0.95, better="higher"),
        row(f"  GradCache (chunks of {chunk}) vs plain step (s/step)", g, p, "s", 1.4),
        row("  embedding, eval bf16 (items/s) vs the CPU collator's preprocessing rate", emb_rate, collate_rate,
            "it/s", None, better="higher"),
    ]
    if device == "cuda":
        rows += [row("  peak GPU memory, plain step (GiB) vs the card's", p_peak,
                     torch.cuda.get_device_properties(0).total_memory / GIB, "GiB", None),
                 row(f"  peak GPU memory, GradCache (chunks of {chunk}) vs plain step (GiB)", g_peak, p_peak, "GiB",
                     None)]
    return rows


def vlm_plain_loop(module: Any, batch: dict[str, Any], steps: int, device: str, chunk: int | None) -> list[float]:
    """The vlm step written out (plain, or GradCache), bf16 autocast, AdamW."""
    from rare.train.gradcache import grad_cache_step
    from rare.train.loss import contrastive_loss

    r = module.retriever
    optimizer = module.configure_optimizers()["optimizer"]
    ends = []
    for _ in range(WARMUP + steps):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.bfloat16):
            if chunk is None:
                contrastive_loss(r(batch["query"]), r(batch["cand"]), r.scale()).backward()
            else:
                grad_cache_step(r, batch["query"], batch["cand"], lambda a, b: contrastive_loss(a, b, r.scale()), chunk,
                                r.split, prepare=r.frozen_features, loss_params=r.scale)  # as rare train runs it
        optimizer.step()
        sync(device)
        ends.append(time.perf_counter())
    return durations(ends)


# ------------------------------------------------------------------------------------------------------

PARTS: dict[str, Callable[[bool, str], list[dict[str, Any]]]] = {
    "train": train_rows, "search": search_rows, "caption": caption_rows, "serve": serve_rows, "vlm": vlm_rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("parts", nargs="*", help=f"parts to run, of {list(PARTS)} (default: all)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, any device: proves the code runs")
    args = ap.parse_args(argv)
    if unknown := sorted(set(args.parts) - set(PARTS)):
        ap.error(f"unknown part(s) {unknown}; choose from {list(PARTS)}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not args.smoke:
        ap.error("no CUDA device; use --smoke for a CPU run at tiny sizes")
    warnings.filterwarnings("ignore", category=UserWarning)
    import transformers

    transformers.utils.logging.set_verbosity_error()
    out = Path(os.environ["OUT"]) / "gpu_check.json" if os.environ.get("OUT") else None
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
        "smoke": args.smoke, "started": time.strftime("%Y-%m-%d %H:%M:%S"), "parts": {}}
    print(f"gpu check on {results['device']} (torch {torch.__version__}){' --smoke' if args.smoke else ''}", flush=True)
    for name in args.parts or list(PARTS):
        print(f"== {name}", flush=True)
        start = time.perf_counter()
        try:
            rows = PARTS[name](args.smoke, device)
            print_rows(rows)
            results["parts"][name] = {"rows": rows}
        except Exception:  # noqa: BLE001 - one part's failure must not cost the others' figures
            trace = traceback.format_exc()
            print(trace, file=sys.stderr, flush=True)
            results["parts"][name] = {"error": trace}
        results["parts"][name]["seconds"] = round(time.perf_counter() - start, 1)
        print(f"   ({results['parts'][name]['seconds']} s)", flush=True)
        free(device)
        if out is not None:
            out.write_text(json.dumps(results, indent=1) + "\n")
    failed = [name for name, part in results["parts"].items() if "error" in part]
    print(f"done; failed parts: {failed}" if failed else "done", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

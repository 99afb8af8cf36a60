"""A ``vlm`` run on the embedded benchmark end to end: train (LoRA, GradCache) -> export -> MLflow pyfunc ->
evaluate (local + global pools) -> the zero-shot row -> serve's model loading.

A WIRING CHECK, not a result: the model is a tiny random Qwen2-VL built from a config (tests/vlm_tiny.py), so
its scores only show that every stage accepts the family; they say nothing about VLM retrievers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rare.config.evaluate import EvaluateParams
from rare.config.tracking import TrackingParams
from rare.config.train import OptimParams, TrainParams
from rare.model import EncodeInput, load_retriever
from tests.vlm_tiny import save_tiny


@pytest.mark.slow
def test_vlm_family_runs_train_evaluate_zero_shot_and_serve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           tiny_benchmark_root: Path) -> None:
    import mlflow
    import pandas as pd
    import transformers

    from rare.evaluate.protocol import evaluate
    from rare.pretrain.tower import export_zero_shot
    from rare.serve.index import load_variant
    from rare.stages.train import train_tracked as train_variant

    transformers.utils.logging.set_verbosity_error()
    monkeypatch.chdir(tmp_path)
    base = save_tiny(tmp_path / "qwen2-vl-tiny", "qwen2_vl")
    tracking = TrackingParams(tracking_uri=f"sqlite:///{tmp_path}/mlruns/mlflow.db",
                              artifact_root=str(tmp_path / "mlruns/artifacts"))
    vlm = {"model": {"pretrained": str(base)}, "lora": {"r": 4, "alpha": 8, "dropout": 0.0}, "grad_cache_chunk": 4}
    params = TrainParams(model={"family": "vlm", "vlm": vlm}, batch_size=8, epochs=1, max_steps=2, val_every_n_steps=2,
                         checkpoint_every_n_steps=2, val_max_queries=16, num_workers=0,
                         optim=OptimParams(lr=1e-3, lr_new=None, weight_decay=0.0), cache_dir=str(tmp_path / "cache"))
    out = train_variant("none", tiny_benchmark_root, tmp_path / "models/none", params, tracking,
                        metrics=tmp_path / "metrics/train_none.json")

    meta = json.loads((out / "meta.json").read_text())
    assert meta["global_steps"] == 2 and [s for s, _ in meta["val_loss"]] == [0, 2]
    assert (out / "vlm" / "config.json").is_file()  # LoRA merged into a plain checkpoint
    r = load_retriever(out)
    assert r.spec["family"] == "vlm" and r.embed_dim == 64

    # the registered MLflow pyfunc embeds as the retriever does
    model = mlflow.pyfunc.load_model("models:/rare-none/1")
    with torch.inference_mode():
        expected = r(r.collator()([EncodeInput("a red circle", None)])).numpy()
    got = model.predict(pd.DataFrame({"text": ["a red circle"], "image": [""]}))
    assert got == pytest.approx(expected, abs=1e-5)

    # evaluation over local and global pools
    ev = EvaluateParams(device="cpu", precision="fp32", embed_batch=32, cache_dir=str(tmp_path / "emb"))
    metrics = evaluate("none", r, "none", tiny_benchmark_root, tmp_path / "eval/none", ev)
    assert set(metrics["score"]) == {"local", "global"}
    assert all(0.0 <= v <= 100.0 for v in metrics["score"].values())
    info = json.loads((tmp_path / "eval/none/info.json").read_text())
    assert info["regime"] == "trained"

    # the zero-shot row: the untrained start (LoRA B = 0) exported and evaluated like any other
    zs = load_retriever(export_zero_shot(params, tmp_path / "models/zero-shot"))
    assert zs.meta.variant == "zero-shot" and zs.fingerprint != r.fingerprint
    zs_metrics = evaluate("zero-shot", zs, "none", tiny_benchmark_root, tmp_path / "eval/zero-shot", ev)
    assert set(zs_metrics["score"]) == {"local", "global"}

    # serve opens the trained model over the pools its evaluation cached, and embeds queries the same way
    variant = load_variant("none", out, tiny_benchmark_root, ev, None, None)
    with torch.inference_mode():
        again = variant.retriever(variant.retriever.collator()([EncodeInput("a red circle", None)])).numpy()
    assert again == pytest.approx(expected, abs=1e-5)

"""The pretrain stage on a tiny model: it writes an HF checkpoint that `train` loads and really uses,
it resumes after a kill, and its zero-shot export runs through the ordinary evaluation code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from rare.config.evaluate import EvaluateParams
from rare.config.pretrain import PretrainParams
from rare.config.train import OptimParams, TowerSource, TrainParams
from rare.evaluate.protocol import evaluate
from rare.manifest import verify
from rare.model import EncodeInput, build_retriever, load_retriever
from rare.pretrain.tower import export_zero_shot, pretrain
from tests.fixtures.models import tiny_model_params

TINY_CNN = {"model_type": "rare-cnn", "channels": [8, 16], "hidden_size": 32, "image_size": 32}


def _pretrain_params(tokenizer: Path, cache: Path, **kw) -> PretrainParams:
    model = tiny_model_params(tokenizer).model_copy(update={"vision": TowerSource(config=TINY_CNN), "image_pooling": "pooler"})
    return PretrainParams.model_validate({"model": model.model_dump(), "scenes": 96, "holdout": 16, "batch_size": 16,
                                          "steps": 4, "checkpoint_every_n_steps": 2, "num_workers": 0,
                                          "cache_dir": str(cache), **kw})


def _train_params(tokenizer: Path, checkpoint: Path, cache: Path) -> TrainParams:
    model = tiny_model_params(tokenizer).model_copy(update={"vision": TowerSource(pretrained=str(checkpoint)),
                                                            "image_pooling": "pooler"})
    return TrainParams.model_validate({"model": model.model_dump(), "batch_size": 8, "max_steps": 2,
                                       "val_every_n_steps": 2, "checkpoint_every_n_steps": 2, "num_workers": 0,
                                       "optim": OptimParams(lr=1e-3, lr_new=1e-3).model_dump(),
                                       "cache_dir": str(cache)})


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer_dir: Path) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("pretrain")
    figures = pretrain(tmp / "ckpt", _pretrain_params(tiny_tokenizer_dir, tmp / "cache"))
    return tmp / "ckpt", figures


def test_pretraining_writes_a_hf_checkpoint_and_its_figures(checkpoint: tuple[Path, dict]) -> None:
    from transformers import AutoModel

    path, figures = checkpoint
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "manifest.json", "model.safetensors"]
    assert set(verify(path / "manifest.json", full=True).files) == {"config.json", "model.safetensors"}
    assert json.loads((path / "config.json").read_text())["model_type"] == "rare-cnn"
    tower = AutoModel.from_pretrained(path)
    assert tower(pixel_values=torch.zeros(2, 3, 32, 32)).pooler_output.shape == (2, 32)
    assert figures["steps"] == 4 and len(figures["loss"]) == 4 and figures["pairs"] == 80
    assert 0 <= figures["holdout_t2i_r5"] <= 100 and figures["holdout_pairs"] == 16
    assert all(v == v for v in figures["loss"])  # no NaN


def test_a_killed_pretraining_resumes_to_the_same_weights(tmp_path: Path, tiny_tokenizer_dir: Path,
                                                          checkpoint: tuple[Path, dict]) -> None:
    params = _pretrain_params(tiny_tokenizer_dir, tmp_path / "cache")

    class Killed(Exception):
        pass

    def kill_at_3(step: int, loss: float) -> None:
        if step == 3:
            raise Killed

    with pytest.raises(Killed):
        pretrain(tmp_path / "ckpt", params, on_step=kill_at_3)
    assert not (tmp_path / "ckpt").exists()  # a failed run leaves no checkpoint behind
    seen: list[int] = []
    figures = pretrain(tmp_path / "ckpt", params, on_step=lambda step, loss: seen.append(step))
    assert seen == [2, 3]  # resumed after the checkpoint at step 2
    assert figures["loss"] == checkpoint[1]["loss"]
    resumed, whole = load_file(str(tmp_path / "ckpt/model.safetensors")), load_file(str(checkpoint[0] / "model.safetensors"))
    assert all(torch.equal(resumed[k], whole[k]) for k in whole)


@pytest.mark.slow
def test_train_loads_the_checkpoint_and_its_weights_change_the_trained_model(
        tmp_path: Path, tiny_tokenizer_dir: Path, tiny_benchmark_root: Path, checkpoint: tuple[Path, dict]) -> None:
    from rare.train.fit import train_variant

    path = checkpoint[0]
    weights = load_file(str(path / "model.safetensors"))
    built = build_retriever(_train_params(tiny_tokenizer_dir, path, tmp_path / "c0").model)
    state = built.towers.vision.state_dict()
    assert all(torch.equal(state[k], weights[k]) for k in weights)
    assert torch.equal(built.towers.image_proj.weight, torch.eye(32))  # pretrained into the text space

    changed = tmp_path / "changed"
    changed.mkdir()
    (changed / "config.json").write_text((path / "config.json").read_text())
    save_file({k: v * 0.5 if v.is_floating_point() else v for k, v in weights.items()}, str(changed / "model.safetensors"))

    image = EncodeInput("", Image.new("RGB", (32, 32), (200, 30, 30)))
    embeddings = []
    for i, ckpt in enumerate((path, path, changed)):
        out = train_variant("none", tiny_benchmark_root, tmp_path / f"m{i}", _train_params(tiny_tokenizer_dir, ckpt,
                            tmp_path / f"cache{i}")).out
        r = load_retriever(out)
        with torch.no_grad():
            embeddings.append(r(r.collator()([image])))
    assert torch.equal(embeddings[0], embeddings[1])  # training is deterministic ...
    assert not torch.allclose(embeddings[0], embeddings[2], atol=1e-4)  # ... so the checkpoint made the difference


def test_zero_shot_export_is_evaluated_by_the_ordinary_evaluation(
        tmp_path: Path, tiny_tokenizer_dir: Path, tiny_benchmark_root: Path, checkpoint: tuple[Path, dict]) -> None:
    params = _train_params(tiny_tokenizer_dir, checkpoint[0], tmp_path / "cache")
    out = export_zero_shot(params, tmp_path / "zero-shot")
    r = load_retriever(out)
    assert r.meta.variant == "zero-shot" and r.meta.global_steps == 0
    weights = load_file(str(checkpoint[0] / "model.safetensors"))
    assert all(torch.equal(r.towers.vision.state_dict()[k], weights[k]) for k in weights)
    assert not r.gate.weight.any() and not r.gate.bias.any()  # the identity gate: the plain sum
    metrics = evaluate("zero-shot", r, "none", tiny_benchmark_root, tmp_path / "eval",
                       EvaluateParams(cache_dir=str(tmp_path / "emb"), pools=["local"]))
    info = json.loads((tmp_path / "eval/info.json").read_text())
    assert info["regime"] == "zero-shot" and info["inputs"] == "none"
    assert set(metrics["local"]) == set(info["dataset_tasks"]) and "local" in metrics["score"]
    assert (tmp_path / "eval/runs/local").is_dir()


def test_pretrain_metrics_split_scores_curve_and_runtime(tmp_path: Path) -> None:
    """The DVC metric holds quality only: a rebuild with other timings leaves it (and git) unchanged."""
    from rare.pretrain.tower import write_pretrain_metrics

    figures = {"holdout_t2i_r5": 94.4, "loss_start": 5.5, "loss_final": 2.5, "loss": [5.5, 4.0, 2.5],
               "steps": 3, "fit_seconds": 12.5, "pretrain_seconds": 20.0}
    write_pretrain_metrics(figures, tmp_path / "metrics/pretrain.json")
    assert json.loads((tmp_path / "metrics/pretrain.json").read_text()) == {
        "holdout_t2i_r5": 94.4, "loss_start": 5.5, "loss_final": 2.5}
    assert json.loads((tmp_path / "metrics/loss/pretrain.json").read_text()) == [
        {"step": 0, "loss": 5.5}, {"step": 1, "loss": 4.0}, {"step": 2, "loss": 2.5}]
    assert json.loads((tmp_path / "metrics/runtime/pretrain.json").read_text()) == {
        "fit_seconds": 12.5, "pretrain_seconds": 20.0, "steps": 3}

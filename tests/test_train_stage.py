"""The train stage end to end: the embedded default model learns, exports, and is tracked in MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from rare.config.tracking import TrackingParams
from rare.config.train import OptimParams, TrainParams
from rare.model import EncodeInput, load_retriever
from tests.fixtures.models import tiny_model_params


def test_default_model_lowers_val_loss_and_is_tracked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      tiny_benchmark_root: Path) -> None:
    """Real MiniLM text tower + ViT from scratch on the tiny embedded benchmark, a few CPU steps."""
    import mlflow

    from rare.stages.train import train_tracked as train_variant

    monkeypatch.chdir(tmp_path)
    tracking = TrackingParams(tracking_uri=f"sqlite:///{tmp_path}/mlruns/mlflow.db",
                              artifact_root=str(tmp_path / "mlruns/artifacts"))
    params = TrainParams(batch_size=16, epochs=3, max_steps=12, val_every_n_steps=6, checkpoint_every_n_steps=6,
                         num_workers=1, optim=OptimParams(lr=1e-4, lr_new=1e-3), cache_dir=str(tmp_path / "cache"))
    out = train_variant("none", tiny_benchmark_root, tmp_path / "models/none", params, tracking,
                        metrics=tmp_path / "metrics/train_none.json")

    meta = json.loads((out / "meta.json").read_text())
    curve = meta["val_loss"]
    assert [step for step, _ in curve] == [0, 6, 12]
    assert curve[-1][1] < curve[0][1] - 0.1, curve  # it learned something that transfers to val queries
    assert meta["variant"] == "none" and meta["text_mode"] == {"corpus": "prepend", "query": "replace"}
    assert meta["global_steps"] == 12 and meta["samples"] == 12 * 16
    assert not {"samples_per_sec", "fit_seconds", "train_seconds"} & set(meta)  # no timings in the model folder
    r = load_retriever(out)
    assert r.embed_dim == 384 and r.meta.instruction_seed == 0
    assert r.gate.weight.any() and r.gate.bias.any()  # the modality gate trained away from the identity

    metrics = tmp_path / "metrics/train_none.json"
    assert json.loads(metrics.read_text()) == {"train_loss": meta["train_loss"], "val_loss_final": curve[-1][1]}
    val = json.loads((tmp_path / "metrics/loss/none_val.json").read_text())
    assert val == [{"step": step, "loss": loss} for step, loss in curve]
    train = json.loads((tmp_path / "metrics/loss/none_train.json").read_text())
    assert [row["step"] for row in train] == list(range(12))
    runtime = json.loads((tmp_path / "metrics/runtime/train_none.json").read_text())
    assert runtime["global_steps"] == 12 and runtime["samples"] == 12 * 16
    assert runtime["samples_per_sec"] > 0 and runtime["train_seconds"] >= runtime["fit_seconds"] > 0

    client = mlflow.MlflowClient(tracking.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("rare").experiment_id],
                              filter_string="tags.`rare.variant` = 'none'")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.run_name == "train-none" and run.info.status == "FINISHED"
    assert run.data.tags["rare.stage"] == "train" and run.data.tags["mlflow.parentRunId"]
    assert run.data.tags["rare.data_digest"]
    assert run.data.params["train.batch_size"] == "16" and run.data.params["variant"] == "none"
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert sorted(m.step for m in history) == [row["step"] for row in train]
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx([row["loss"] for row in train])
    logged = sorted(client.get_metric_history(run.info.run_id, "val/loss"), key=lambda m: m.step)
    assert [m.step for m in logged] == [step for step, _ in curve]  # 0, 6, 12, as in the metrics JSON
    assert [m.value for m in logged] == pytest.approx([v for _, v in curve])
    assert client.get_metric_history(run.info.run_id, "train/device/samples_per_sec")
    version = client.get_model_version("rare-none", "1")
    assert version.run_id == run.info.run_id
    assert version.tags["rare.fingerprint"] == r.fingerprint
    model = mlflow.pyfunc.load_model("models:/rare-none/1")
    with torch.inference_mode():
        expected = r(r.collator()([EncodeInput("a red circle", None)])).numpy()
    import pandas as pd

    got = model.predict(pd.DataFrame({"text": ["a red circle"], "image": [""]}))
    assert got == pytest.approx(expected, abs=1e-5)
    assert not list((tmp_path / "cache/runs").iterdir())  # checkpoints dropped after the export


def _params_file(tmp_path: Path, tokenizer_dir: Path) -> Path:
    model = tiny_model_params(tokenizer_dir).model_dump(mode="json")
    doc = {"train": {"model": model, "batch_size": 8, "max_steps": 3, "val_every_n_steps": 3, "num_workers": 0,
                     "cache_dir": str(tmp_path / "cache")},
           "tracking": {"enabled": False}}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.slow
def test_cli_trains_through_the_prefect_flow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             tiny_root_session: Path, tiny_tokenizer_dir: Path) -> None:
    from rare.cli import app

    monkeypatch.chdir(tmp_path)
    params = _params_file(tmp_path, tiny_tokenizer_dir)
    runner = CliRunner()
    ok = runner.invoke(app, ["train", "none", "--data", str(tiny_root_session), "--out", "models/none",
                             "--params", str(params), "--metrics", "metrics/none.json"])
    assert ok.exit_code == 0, ok.output
    assert load_retriever(tmp_path / "models/none").meta.global_steps == 3
    assert json.loads((tmp_path / "metrics/runtime/none.json").read_text())["global_steps"] == 3

    bad = runner.invoke(app, ["train", "corpus", "--data", str(tiny_root_session), "--out", "models/corpus",
                              "--params", str(params)])
    assert bad.exit_code == 1
    assert "error:" in bad.output and "needs enhanced data" in bad.output
    assert not (tmp_path / "models/corpus").exists()


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_through_the_cli(tmp_path: Path, tiny_root_session: Path,
                                                  tiny_tokenizer_dir: Path) -> None:
    """Lightning re-runs the command for rank 1; that worker trains without its own flow or MLflow run."""
    import subprocess
    import sys

    import mlflow

    params = _params_file(tmp_path, tiny_tokenizer_dir)
    doc = yaml.safe_load(params.read_text())
    doc["train"].update(batch_size=4, max_steps=6, epochs=2, accelerator="cpu", devices=2, strategy="ddp")
    doc["tracking"] = {"enabled": True}
    params.write_text(yaml.safe_dump(doc))
    done = subprocess.run([sys.executable, "-m", "rare", "train", "none", "--data", str(tiny_root_session),
                           "--out", "models/none", "--params", str(params)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    output = done.stdout + done.stderr  # a real Trainer's output, as a DVC stage prints it: no tool tips
    assert "Trainer.fit" in output and not any(tip in output for tip in ("Tip:", "litlogger", "litmodels"))
    meta = load_retriever(tmp_path / "models/none").meta
    assert meta.global_batch == 8 and meta.global_steps == 6
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("rare").experiment_id],
                              filter_string="tags.`rare.variant` = 'none'")
    assert len(runs) == 1
    assert client.get_metric_history(runs[0].info.run_id, "train/samples_per_sec")  # the global figure (2 ranks)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bf16_mixed_training_on_gpu(tmp_path: Path, tiny_root_session: Path, tiny_tokenizer_dir: Path) -> None:
    from rare.train.fit import train_variant

    params = TrainParams(model=tiny_model_params(tiny_tokenizer_dir), optim=OptimParams(lr=1e-3, lr_new=3e-3),
                         batch_size=8, epochs=3, max_steps=8, val_every_n_steps=4, num_workers=0,
                         accelerator="gpu", precision="bf16-mixed", cache_dir=str(tmp_path / "cache"))
    out = train_variant("none", tiny_root_session, tmp_path / "model", params).out
    curve = json.loads((out / "meta.json").read_text())["val_loss"]
    assert curve[-1][1] < curve[0][1]
    r = load_retriever(out, device="cuda")
    batch = r.collator()([EncodeInput("a red circle", None)])
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        emb = r(batch)
    assert emb.dtype == torch.float32 and torch.allclose(emb.norm(dim=1), torch.ones(1, device="cuda"), atol=1e-5)

"""The seed study: replicas declared through the stage registry, distinct models per seed, grouped in MLflow."""

from __future__ import annotations

from pathlib import Path

import pytest

from rare.config.tracking import TrackingParams
from rare.config.train import OptimParams, TrainParams
from rare.report.evidence import row_of
from rare.stages import INFERENCE_ONLY, study_stages
from rare.stages.variants import VARIANTS


def test_study_declares_every_variant_and_evaluation_per_seed():
    stages = list(study_stages([1, 2]))
    trains = [s for s in stages if s.step.command == "train"]
    evals = [s for s in stages if s.step.command == "evaluate"]
    assert len(trains) == 2 * len(VARIANTS) and len(evals) == 2 * (len(VARIANTS) + len(INFERENCE_ONLY))
    corpus = next(s for s in trains if s.name == "train_corpus_s2")
    assert corpus.cmd == ("rare train corpus --data data/raw --corpus-enhanced data/enhanced/corpus "
                          "--out models/study/corpus@s2 --seed 2")
    infer = next(s for s in evals if s.name == "eval_infer_both_s1")
    assert "--model models/study/none@s1" in infer.cmd and infer.cmd.endswith("--inputs both --out eval/infer-both@s1")
    assert {row_of(s.args[0]) for s in evals} == {(n, seed) for seed in (1, 2)
                                                  for n in (*VARIANTS, *(f"infer-{v}" for v in INFERENCE_ONLY))}


@pytest.mark.slow
def test_seeds_give_distinct_models_grouped_in_mlflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      tiny_benchmark_root: Path) -> None:
    import mlflow

    from rare.stages.train import train_tracked as train_variant

    monkeypatch.chdir(tmp_path)
    tracking = TrackingParams(tracking_uri=f"sqlite:///{tmp_path}/mlruns/mlflow.db",
                              artifact_root=str(tmp_path / "mlruns/artifacts"))
    base = TrainParams(batch_size=8, epochs=1, max_steps=2, val_every_n_steps=2, checkpoint_every_n_steps=2,
                       num_workers=0, optim=OptimParams(lr=1e-3, lr_new=1e-3), cache_dir=str(tmp_path / "cache"))
    weights = {}
    for seed in (0, 1, 0):
        out = train_variant("none", tiny_benchmark_root, tmp_path / f"m{seed}", base.model_copy(update={"seed": seed}),
                            tracking)
        weights.setdefault(seed, []).append((out / "model.safetensors").read_bytes())
    assert weights[0][0] == weights[0][1]  # the same seed: the same model
    assert weights[0][0] != weights[1][0]  # another seed: another model
    client = mlflow.MlflowClient(tracking.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("rare").experiment_id],
                              filter_string="tags.`rare.seed_group` = 'train-none'")
    assert sorted(r.data.tags["rare.seed"] for r in runs) == ["0", "0", "1"]

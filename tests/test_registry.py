"""A registered retriever embeds as the evaluation stage does, and carries the evaluation's scores."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from rare import mlflow_runs as rare_tracking
from rare import registry
from rare.config.evaluate import EvaluateParams
from rare.config.tracking import TrackingParams
from rare.evaluate import embed
from rare.evaluate.protocol import embed_all, plan
from rare.model import load_retriever
from rare.stages.evaluate import evaluate_tracked
from tests.fixtures.models import make_tiny_retriever


def _rows(items: list[embed.EmbedInput], root: Path) -> pd.DataFrame:
    return pd.DataFrame({"text": [it.text for it in items],
                         "image": [registry.encode_image(root / it.image) if it.image else "" for it in items]})


def test_registered_pyfunc_embeds_like_the_evaluation_stage(tiny_root: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(rare_tracking.PARENT_ENV, raising=False)
    tracking = TrackingParams(experiment="rare-test")
    model_dir = make_tiny_retriever(tmp_path / "models/none")
    retriever = load_retriever(model_dir)
    example = next((tiny_root / "mbeir_images").rglob("*.png"))
    with rare_tracking.child_run(tracking, "train", "train-none", active=False, data=tiny_root) as run_id:
        version = registry.log_retriever(run_id, model_dir, "none", retriever.fingerprint, example)
    assert (version.name, str(version.version)) == ("rare-none", "1")

    digest = rare_tracking.data_digest(tiny_root)
    assert f"data digest {digest[:12]}" in version.description and "not evaluated yet" in version.description
    model = mlflow.pyfunc.load_model(f"models:/rare-none@{registry.LATEST_ALIAS}")
    assert model.metadata.signature.inputs.input_names() == ["text", "image"]
    assert (model.metadata.get_input_schema() is not None and model.metadata.saved_input_example_info is not None)

    params = EvaluateParams(cache_dir=str(tmp_path / "cache"), top_k=10, pools=["local"])
    p = plan("none", retriever.meta, "none", tiny_root, params)
    emb = embed_all(p, retriever, params)
    task = next(t for t in p.tasks if any(it.image for it in embed.query_items(t.queries, p.query_view)))
    for items, stored in ((embed.query_items(task.queries, p.query_view), emb.queries[task.dt.name]),
                          (embed.pool_items(task.pool, p.corpus_view), emb.pools[task.dt.name])):
        got = model.predict(_rows(items, tiny_root))
        assert got.shape == (len(items), retriever.embed_dim) and got.dtype == np.float32
        np.testing.assert_allclose(got, np.asarray(stored.vectors(), dtype=np.float32), atol=2e-3)  # cache is fp16
        assert list(stored.ids()) == [it.id for it in items]

    metrics = evaluate_tracked("none", retriever, "none", tiny_root, tmp_path / "eval/none", params, None, None,
                               tracking, model=model_dir)
    tagged = mlflow.MlflowClient().get_model_version("rare-none", "1").tags
    assert tagged[registry.FINGERPRINT_TAG] == retriever.fingerprint
    assert float(tagged["score.none.local"]) == pytest.approx(metrics["score"]["local"])
    described = mlflow.MlflowClient().get_model_version_by_alias("rare-none", registry.LATEST_ALIAS)
    assert str(described.version) == "1"
    assert f"none.local {metrics['score']['local']:.2f}" in described.description
    assert f"data digest {digest[:12]}" in described.description

"""Trained retrievers in the MLflow model registry, as pyfunc models that embed queries and candidates.

The pyfunc carries the exported retriever folder (weights, spec, tower configs, tokenizer, meta) as its
artifact and embeds through the retriever's own collator and ``forward``, so a registered version embeds
exactly as the evaluation stage does, whatever tower family or fusion it has. Input: a table with
``text`` (for a query: the instruction and the query, as evaluation builds it) and ``image`` (base64 of
the image file, "" for none). Output: one L2-normalised float32 row per input row.

    model = mlflow.pyfunc.load_model("models:/rare-both@latest-run")
    vectors = model.predict(pd.DataFrame({"text": ["a red circle"], "image": [""]}))
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

FINGERPRINT_TAG = "rare.fingerprint"  # on a model version: which export it is (see Retriever.fingerprint)
DIGEST_TAG = "rare.data_digest"  # on the training run (rare.mlflow_runs.run_tags)
SCORE_PREFIX = "score."
# Moved to each new version of rare-<variant>: `models:/rare-<variant>@latest-run` is the last trained one.
LATEST_ALIAS = "latest-run"
PREDICT_BATCH = 64


def model_name(variant: str) -> str:
    return f"rare-{variant}"


def encode_image(path: str | Path) -> str:
    """An image file as the pyfunc's ``image`` column expects it."""
    return base64.b64encode(Path(path).read_bytes()).decode("ascii")


class RetrieverModel(mlflow.pyfunc.PythonModel):
    """Embeds rows of (text, image) with the retriever exported under the ``retriever`` artifact."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        from rare.model import load_retriever

        self.retriever = load_retriever(context.artifacts["retriever"])

    def predict(self, context: mlflow.pyfunc.PythonModelContext, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> np.ndarray:
        import torch
        from PIL import Image

        from rare.model import EncodeInput

        collate = self.retriever.collator()
        rows = [EncodeInput(text or "", Image.open(io.BytesIO(base64.b64decode(image))) if image else None)
                for text, image in zip(model_input["text"], model_input["image"])]
        out = []
        with torch.inference_mode():
            for start in range(0, len(rows), PREDICT_BATCH):
                out.append(self.retriever(collate(rows[start:start + PREDICT_BATCH])).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.retriever.embed_dim), dtype=np.float32)


def _example(image: Path | None) -> pd.DataFrame:
    return pd.DataFrame({"text": ["find the picture that matches this caption", ""],
                         "image": ["", encode_image(image) if image else ""]})


def log_retriever(run_id: str, model_dir: Path, variant: str, fingerprint: str,
                  example_image: Path | None = None) -> Any:
    """Log ``model_dir`` as a pyfunc model of ``run_id`` and register it as a new version of ``rare-<variant>``.

    ``example_image`` (any image of the training data) makes the input example show both columns in use.
    Returns the registered ModelVersion.
    """
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec

    from rare.model.io import SPEC_FILE

    dim = json.loads((Path(model_dir) / SPEC_FILE).read_text(encoding="utf-8"))["embed_dim"]
    signature = ModelSignature(inputs=Schema([ColSpec("string", "text"), ColSpec("string", "image")]),
                               outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, dim))]))
    example = _example(example_image)
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name="retriever", python_model=str(Path(__file__).with_name("pyfunc_loader.py")),
            artifacts={"retriever": str(model_dir)}, signature=signature,
            input_example=example, registered_model_name=model_name(variant),
            pip_requirements=_requirements(), tags={FINGERPRINT_TAG: fingerprint},
        )
    client = mlflow.MlflowClient()
    version = client.get_model_version(model_name(variant), str(info.registered_model_version))
    client.set_model_version_tag(version.name, version.version, FINGERPRINT_TAG, fingerprint)
    client.set_registered_model_alias(version.name, LATEST_ALIAS, version.version)
    return _describe(client, version.name, version.version)


def description(variant: str, data_digest: str | None, scores: dict[str, str]) -> str:
    """What the registry UI shows for a version: which data it was trained on and how it scored, so two
    versions can be told apart without opening their runs."""
    data = f"data digest {data_digest[:12]}" if data_digest else "data digest unknown"
    scored = ", ".join(f"{key} {float(value):.2f}" for key, value in sorted(scores.items())) or "not evaluated yet"
    return f"rare retriever, variant {variant}; trained on {data}; M-BEIR scores: {scored}"


def _describe(client: mlflow.MlflowClient, name: str, version: str) -> Any:
    mv = client.get_model_version(name, version)
    digest = client.get_run(mv.run_id).data.tags.get(DIGEST_TAG) if mv.run_id else None
    scores = {k.removeprefix(SCORE_PREFIX): v for k, v in mv.tags.items() if k.startswith(SCORE_PREFIX)}
    text = description(name.removeprefix("rare-"), digest, scores)
    return client.update_model_version(name, version, description=text)


def _requirements() -> list[str]:
    """What loading the pyfunc imports (rare itself must be installed beside it); inferring them would
    load the model once more in a subprocess."""
    from importlib.metadata import version

    return [f"{pkg}=={version(pkg)}" for pkg in ("torch", "transformers", "safetensors", "pillow", "numpy", "pandas")]


def tag_scores(variant: str, fingerprint: str, evaluation: str, scores: dict[str, float]) -> Any:
    """Tag the newest registered version of ``rare-<variant>`` with this export's fingerprint with an
    evaluation's scores (``score.<evaluation>.<pool>``); None when no version matches (an export that was
    trained with tracking off, or a model from elsewhere)."""
    client = mlflow.MlflowClient()
    versions = client.search_model_versions(f"name = '{model_name(variant)}'")
    found = [v for v in versions if v.tags.get(FINGERPRINT_TAG) == fingerprint]
    if not found:
        return None
    version = max(found, key=lambda v: int(v.version))
    for pool, value in scores.items():
        client.set_model_version_tag(version.name, version.version, f"{SCORE_PREFIX}{evaluation}.{pool}", str(value))
    return _describe(client, version.name, version.version)

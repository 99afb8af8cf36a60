"""Pretrain stage parameters: CLIP-style contrastive pretraining of the dual encoder's vision tower.

The tower learns to see on alt-text-like captions of scenes from the benchmark's world (never
its splits), against the frozen pretrained text tower, so the ``none`` baseline starts from a
retriever that already sees coarse content, as CLIP does. ``train.model.vision.pretrained``
points at the checkpoint this stage writes.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from rare.config.base import Section
from rare.config.train import ModelParams, OptimParams, TowerSource

# 4 conv blocks on 64x64 images (src/rare/model/cnn.py), its head at the text tower's width (MiniLM: 384),
# so the pooled output lands directly in the text embedding space.
SMALL_CNN = {"model_type": "rare-cnn", "channels": [32, 64, 128, 256], "hidden_size": 384, "image_size": 64}


class PretrainParams(Section):
    model: ModelParams = ModelParams(vision=TowerSource(config=SMALL_CNN), image_pooling="pooler")
    seed: int = 0                              # the corpus stream is rare-pretrain:<seed>, apart from the benchmark's
    scenes: int = Field(30000, ge=8)           # generated (image, alt-text) pairs
    holdout: int = Field(1000, ge=1)           # pairs kept out of training to measure image<->text retrieval
    batch_size: int = Field(256, ge=2)
    steps: int = Field(150, ge=1)
    optim: OptimParams = OptimParams(lr=0.002, lr_new=None, weight_decay=0.05, warmup_steps=10)
    init_temperature: float = Field(0.07, gt=0.0)
    num_workers: int = Field(1, ge=0)          # DataLoader workers rendering scenes
    checkpoint_every_n_steps: int = Field(25, ge=1)
    cache_dir: str = ".cache/rare/pretrain"    # resumable checkpoints; outside the DVC output on purpose

    @model_validator(mode="after")
    def _dual(self) -> PretrainParams:
        if self.model.family != "dual":
            raise ValueError("pretraining trains the 'dual' family's vision tower (model.family: dual)")
        if self.holdout >= self.scenes:
            raise ValueError(f"holdout ({self.holdout}) must be smaller than scenes ({self.scenes})")
        return self

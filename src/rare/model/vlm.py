"""The ``vlm`` family: a Qwen-VL decoder as an embedder, LamRA-Ret's recipe (/work/shared notes; docs/vlm.md).

An item (text, image or both) is rendered as one chat turn that ends in ``<emb>``; the embedding is the last
layer's state (after the final norm) at the token before ``<emb>``, L2-normalised. Text and image are embedded
together, so this family has no towers to fuse: ``VlmTowers.embed`` is the whole retriever forward.

Choices that silently change results are explicit switches (``VlmParams``, copied into ``spec["vlm"]``):

- ``positions``: ``1d`` calls the decoder with ``position_ids=None``, so every token, image tokens included,
  gets position 0..L-1 over the padded length on all M-RoPE axes; that is what LamRA-Ret trained with
  (its forward drops ``get_rope_index``). ``mrope`` computes the stock 3-D M-RoPE positions instead.
- ``prompt`` (``PROMPTS``), ``pooling`` (``POOLINGS``), ``attention``, ``deepstack`` (Qwen3-VL), the temperature.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from rare.data.images import to_rgb
from rare.data.views import TEXT_FORMATS
from rare.model.preprocess import EncodeInput

EMB = "<emb>"
IMAGE_PAD, VISION = "<|image_pad|>", "<|vision_start|><|image_pad|><|vision_end|>"
SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
# LamRA's user-turn suffix by (has text, has image); the trailing space is part of the string.
LAMRA_SUFFIX = {
    (True, False): "\nSummarize above sentence in one word: ",
    (False, True): "\nSummarize above image in one word: ",
    (True, True): "\nSummarize above image and sentence in one word: ",
}
VLM_DIR, ADAPTER_DIR = "vlm", "adapter"
# Batch keys of precomputed vision features (``VlmTowers.frozen_features``); ``embed`` runs the tower without them.
VISUAL_KEY, DEEPSTACK_KEY = "image_embeds", "deepstack_embeds"
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# Full-match regex (peft): the 7 linear kinds under the language model only. A substring match on "model" would
# also reach the vision tower (``model.visual``), whose Qwen2.5-VL MLP has gate/up/down_proj too.
LORA_REGEX = r"(.*\.)?language_model\.layers\.\d+\.(self_attn|mlp)\.(" + "|".join(LORA_TARGETS) + ")"


def _lamra(text: str, has_image: bool) -> str:
    """The training rendering of LamRA-Ret (stock Qwen2-VL chat template, default system turn, image first,
    assistant turn ``<emb>.``). Evaluation's extra generation prompt follows ``<emb>`` and cannot reach the
    pooled token under causal attention."""
    vision = VISION if has_image else ""
    return (f"{SYSTEM}<|im_start|>user\n{vision}{text}{LAMRA_SUFFIX[bool(text), has_image]}<|im_end|>\n"
            f"<|im_start|>assistant\n{EMB}.<|im_end|>\n")


def _vlm2vec(text: str, has_image: bool) -> str:
    """VLM2Vec's ``process_input_text``: no chat template, no vision markers, ``<|image_pad|> {text}``."""
    if not has_image:
        return text
    return f"{IMAGE_PAD} {text}" if text else IMAGE_PAD


PROMPTS: dict[str, Callable[[str, bool], str]] = {"lamra": _lamra, "vlm2vec": _vlm2vec}


def _before_emb(h: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, emb_id: int) -> torch.Tensor:
    hit = ids == emb_id
    if not bool(hit.any(dim=1).all()):
        row = int((~hit.any(dim=1)).nonzero()[0])
        raise ValueError(f"batch row {row}: no {EMB} token to pool before (prompt 'lamra' needs it)")
    first = hit.int().argmax(dim=1)
    return h[torch.arange(h.shape[0], device=h.device), first - 1]


def _last(h: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, emb_id: int) -> torch.Tensor:
    """The last non-pad token, for left and right padding alike."""
    pos = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    last = torch.where(mask.bool(), pos, -1).max(dim=1).values
    return h[torch.arange(h.shape[0], device=h.device), last]


def _mean(h: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, emb_id: int) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(h.dtype)
    return (h * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)


POOLINGS: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]] = {
    "before_emb": _before_emb, "last": _last, "mean": _mean}


def smart_resize_image(img: Image.Image, factor: int, min_tokens: int, max_tokens: int) -> Image.Image:
    """qwen-vl-utils' resize, which LamRA applies before the processor: both sides to multiples of ``factor``
    (patch x merge) within [min, max] x factor^2 pixels, PIL's default (bicubic) filter."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    img = to_rgb(img)
    h, w = smart_resize(img.height, img.width, factor=factor, min_pixels=min_tokens * factor * factor,
                        max_pixels=max_tokens * factor * factor)
    return img if (w, h) == img.size else img.resize((w, h), Image.Resampling.BICUBIC)


class VlmCollator:
    """list[EncodeInput] -> the tensors ``VlmTowers.embed`` takes. Picklable (DataLoader workers)."""

    def __init__(self, tokenizer: Any, spec: dict[str, Any]):
        from transformers import Qwen2VLImageProcessorPil

        self.tokenizer = tokenizer
        self.v = dict(spec["vlm"])
        self.text_format = spec["text_format"]
        factor = self.v["patch_size"] * self.v["merge_size"]
        self.processor = Qwen2VLImageProcessorPil(
            patch_size=self.v["patch_size"], merge_size=self.v["merge_size"],
            temporal_patch_size=self.v["temporal_patch_size"], image_mean=tuple(self.v["image_mean"]),
            image_std=tuple(self.v["image_std"]), min_pixels=self.v["min_image_tokens"] * factor * factor,
            max_pixels=self.v["max_image_tokens"] * factor * factor)

    def render(self, item: EncodeInput) -> str:
        text = TEXT_FORMATS[self.text_format](item.text)
        if not text and item.image is None:
            raise ValueError("an entry with neither text nor image cannot be embedded")
        return PROMPTS[self.v["prompt"]](text, item.image is not None)

    def __call__(self, items: Sequence[EncodeInput]) -> dict[str, torch.Tensor]:
        v, merge2 = self.v, self.v["merge_size"] ** 2
        factor = v["patch_size"] * v["merge_size"]
        texts, pixels, grids, rows = [], [], [], []
        for i, item in enumerate(items):
            text = self.render(item)
            if item.image is not None:
                img = smart_resize_image(item.image, factor, v["min_image_tokens"], v["max_image_tokens"])
                out = self.processor(images=[img], return_tensors="pt")
                grid = out["image_grid_thw"]
                text = text.replace(IMAGE_PAD, IMAGE_PAD * (int(grid.prod()) // merge2), 1)
                pixels.append(out["pixel_values"])
                grids.append(grid)
                rows.append(i)
            texts.append(text)
        tok = self.tokenizer(texts, padding=True, padding_side=v["padding_side"], return_tensors="pt")
        lengths = tok["attention_mask"].sum(dim=1)
        if int(lengths.max()) > v["max_len"]:
            row = int(lengths.argmax())
            raise ValueError(f"entry {row} of the batch is {int(lengths[row])} tokens, over vlm.max_len "
                             f"{v['max_len']}: it is not cut (the {EMB} token would go); raise max_len")
        dim = 3 * v["temporal_patch_size"] * v["patch_size"] ** 2
        return {
            "size": torch.tensor(len(items)),
            "input_ids": tok["input_ids"], "attention_mask": tok["attention_mask"],
            "pixel_values": torch.cat(pixels) if pixels else torch.zeros((0, dim)),
            "image_grid_thw": torch.cat(grids) if grids else torch.zeros((0, 3), dtype=torch.long),
            "image_rows": torch.tensor(rows, dtype=torch.long),
        }


def split_batch(batch: dict[str, torch.Tensor], chunk: int) -> list[dict[str, torch.Tensor]]:
    """Consecutive sub-batches of at most ``chunk`` items, each with its own images' patches. Only trailing
    columns that are padding in every row of the chunk are cut: a real token keeps the position it has in the
    whole batch (left padding, where the pads lead, is kept as it is), and a chunk of short entries does not pay
    for the batch's longest one."""
    size = int(batch["size"])
    patches = batch["image_grid_thw"].prod(dim=1)
    starts = torch.cat([torch.zeros(1, dtype=torch.long), patches.cumsum(0)])
    rows = batch["image_rows"]
    out = []
    for lo in range(0, size, chunk):
        hi = min(lo + chunk, size)
        sel = ((rows >= lo) & (rows < hi)).nonzero().flatten()
        if sel.numel():
            a, b = int(starts[sel[0]]), int(starts[sel[-1] + 1])
            pix = batch["pixel_values"][a:b]
        else:
            pix = batch["pixel_values"][:0]
        mask = batch["attention_mask"][lo:hi]
        width = int(mask.any(dim=0).nonzero().max()) + 1 if mask.any() else mask.shape[1]
        out.append({"size": torch.tensor(hi - lo), "input_ids": batch["input_ids"][lo:hi, :width],
                    "attention_mask": mask[:, :width], "pixel_values": pix,
                    "image_grid_thw": batch["image_grid_thw"][sel], "image_rows": rows[sel] - lo})
    return out


@dataclass(frozen=True)
class Backbone:
    """What differs between the Qwen-VL generations rare reads (config keys, image statistics)."""

    patch_key: str = "patch_size"
    deepstack: bool = False


BACKBONES: dict[str, Backbone] = {
    "qwen2_vl": Backbone(), "qwen2_5_vl": Backbone(), "qwen3_vl": Backbone(deepstack=True),
}


def backbone(model_type: str) -> Backbone:
    try:
        return BACKBONES[model_type]
    except KeyError:
        raise ValueError(f"vlm: model_type {model_type!r} is not supported; allowed: {list(BACKBONES)}") from None


def lora_config(lora: dict[str, Any]) -> Any:
    from peft import LoraConfig

    return LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"], use_dora=lora["dora"],
                      target_modules=LORA_REGEX, bias="none")


def fit_vocabulary(model: nn.Module, tokenizer: Any) -> None:
    """``<emb>`` joins the tokenizer as a normal added token and the matrix is resized to the tokenizer, as LamRA
    does (for Qwen2-VL that shrinks it; ``<emb>`` keeps the checkpoint's own row). Rows past the checkpoint's
    (a tokenizer longer than the matrix) start as the mean of the others, not a random draw, so an adapter
    export reloads onto its base with the same rows."""
    if EMB not in tokenizer.get_vocab():
        tokenizer.add_tokens([EMB])
    old = model.get_input_embeddings().weight.shape[0]
    if old == len(tokenizer):
        return
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    if len(tokenizer) > old:
        with torch.no_grad():
            w = model.get_input_embeddings().weight
            w[old:] = w[:old].mean(dim=0)


def merged_state_dict(peft_model: nn.Module) -> dict[str, torch.Tensor]:
    """The base model's weights with every LoRA delta added, read without touching the live weights
    (merge + unmerge would round them in bf16)."""
    from peft.tuners.lora import LoraLayer

    base = peft_model.get_base_model()
    deltas = {f"{name}.base_layer.weight": m.get_delta_weight(m.active_adapters[0])
              for name, m in base.named_modules() if isinstance(m, LoraLayer)}
    out = {}
    for key, value in base.state_dict().items():
        if "lora_" in key:
            continue
        if key in deltas:
            value = (value.float() + deltas[key].float()).to(value.dtype)
        out[key.replace(".base_layer.", ".")] = value.detach().cpu().contiguous()
    return out


class VlmTowers(nn.Module):
    """The Qwen-VL model (``AutoModel``: decoder + vision tower, no lm_head) behind the family interface."""

    config_names = ()
    joint = True

    def __init__(self, net: nn.Module, spec: dict[str, Any], emb_id: int):
        super().__init__()
        self.net = net  # the HF model, or the PeftModel wrapping it
        self.v = dict(spec["vlm"])
        self.emb_id = emb_id
        self.embed_dim = int(spec["embed_dim"])
        self.backbone = backbone(self.v["model_type"])
        log_scale = torch.tensor(math.log(1.0 / self.v["temperature"]))
        if self.v["learn_temperature"]:
            self.logit_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("inv_temperature", torch.tensor(1.0 / self.v["temperature"]))

    @property
    def model(self) -> nn.Module:
        net = self.net
        return net.get_base_model() if hasattr(net, "get_base_model") else net

    def scale(self) -> torch.Tensor:
        """1 / temperature: fixed (LamRA 0.05, VLM2Vec 0.02) or learnt (U-MARVEL)."""
        if self.v["learn_temperature"]:
            return self.logit_scale.exp()
        return self.inv_temperature

    # -- building --------------------------------------------------------------------------------------
    @classmethod
    def build(cls, params: Any) -> tuple[VlmTowers, Any, dict[str, Any]]:
        """Model, tokenizer and ``spec["vlm"]`` from the training params (``VlmParams``)."""
        from transformers import AutoModel, AutoTokenizer

        from rare.model.towers import resolve_source, source_config

        vp = params.vlm
        dtype = getattr(torch, vp.dtype)
        config = source_config(vp.model)
        if vp.model.pretrained:
            path = resolve_source(vp.model.pretrained)
            model = AutoModel.from_pretrained(path, config=config, dtype=dtype)
        else:
            path = None
            model = AutoModel.from_config(config, dtype=dtype)
        tok_source = params.tokenizer or path
        if not tok_source:
            raise ValueError("train.model.tokenizer must be set when the vlm model is built from a config")
        tokenizer = AutoTokenizer.from_pretrained(resolve_source(tok_source))
        fit_vocabulary(model, tokenizer)
        spec = cls.spec_of(vp, model, path or resolve_source(tok_source), base=str(Path(path).resolve()) if path else None)
        net: nn.Module = model
        if vp.lora is not None:
            from peft import get_peft_model

            net = get_peft_model(model, lora_config(spec["lora"]))
        else:
            model.requires_grad_(True)
        model.visual.requires_grad_(False)
        if vp.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        towers = cls(net, {"vlm": spec, "embed_dim": model.config.text_config.hidden_size},
                     tokenizer.convert_tokens_to_ids(EMB))
        return towers, tokenizer, spec

    @staticmethod
    def spec_of(vp: Any, model: nn.Module, processor_dir: str, base: str | None) -> dict[str, Any]:
        from transformers import Qwen2VLImageProcessorPil

        vc = model.config.vision_config
        mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
        if (Path(processor_dir) / "preprocessor_config.json").is_file():
            proc = Qwen2VLImageProcessorPil.from_pretrained(processor_dir)
            mean, std = proc.image_mean, proc.image_std
        return {
            "model_type": model.config.model_type, "prompt": vp.prompt, "pooling": vp.pooling,
            "positions": vp.positions, "attention": vp.attention, "deepstack": vp.deepstack,
            "temperature": vp.temperature, "learn_temperature": vp.learn_temperature, "padding_side": vp.padding_side,
            "min_image_tokens": vp.min_image_tokens, "max_image_tokens": vp.max_image_tokens, "max_len": vp.max_len,
            "patch_size": vc.patch_size, "merge_size": vc.spatial_merge_size,
            "temporal_patch_size": vc.temporal_patch_size, "image_mean": list(mean), "image_std": list(std),
            "lora": vp.lora.model_dump() if vp.lora else None, "dtype": vp.dtype, "export": vp.export, "base": base,
        }

    def collator(self, tokenizer: Any, spec: dict[str, Any]) -> VlmCollator:
        return VlmCollator(tokenizer, spec)

    @staticmethod
    def split(batch: dict[str, torch.Tensor], chunk: int) -> list[dict[str, torch.Tensor]]:
        return split_batch(batch, chunk)

    # -- embedding -------------------------------------------------------------------------------------
    def _with_visual(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``batch`` plus the vision tower's merged patch features (and Qwen3-VL's deepstack levels when they are
        injected), one row per image token in the order the text holds them."""
        model = self.model
        dev = next(model.parameters()).device
        out = model.get_image_features(batch["pixel_values"].to(dev), batch["image_grid_thw"].to(dev))
        added = {VISUAL_KEY: torch.cat(out.pooler_output)}
        if self.backbone.deepstack and self.v["deepstack"] == "inject":
            added[DEEPSTACK_KEY] = torch.stack([torch.cat(f) for f in out.deepstack_features])
        return {**batch, **added}

    def frozen_features(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The vision tower is frozen (``build``), so its output for a GradCache chunk is the same in the pass
        without a graph and in the pass with one: computed here once, without a graph, and reused by both."""
        if not batch["image_grid_thw"].numel() or any(p.requires_grad for p in self.model.visual.parameters()):
            return batch
        with torch.no_grad():
            return self._with_visual(batch)

    def embed(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        model = self.model
        dev = next(model.parameters()).device
        ids, mask = batch["input_ids"].to(dev), batch["attention_mask"].to(dev)
        embeds = model.get_input_embeddings()(ids)
        image_mask = ids == model.config.image_token_id
        extra: dict[str, Any] = {}
        grid = batch["image_grid_thw"].to(dev)
        if grid.numel():
            if VISUAL_KEY not in batch:
                batch = self._with_visual(batch)
            visual = batch[VISUAL_KEY].to(dev, embeds.dtype)
            if visual.shape[0] != int(image_mask.sum()):
                raise ValueError(f"{int(image_mask.sum())} image tokens in the text, {visual.shape[0]} visual features")
            embeds = embeds.masked_scatter(image_mask.unsqueeze(-1), visual)
            if DEEPSTACK_KEY in batch:
                extra = {"visual_pos_masks": image_mask,
                         "deepstack_visual_embeds": list(batch[DEEPSTACK_KEY].to(dev, embeds.dtype).unbind(0))}
        positions = None
        if self.v["positions"] == "mrope":
            positions, _ = model.get_rope_index(ids, mm_token_type_ids=image_mask.int(),
                                                image_grid_thw=grid if grid.numel() else None, attention_mask=mask)
        attn: Any = mask
        if self.v["attention"] == "bidirectional":
            attn = {"full_attention": bidirectional_mask(mask, embeds.dtype)}
        h = model.language_model(inputs_embeds=embeds, attention_mask=attn, position_ids=positions,
                                 use_cache=False, **extra).last_hidden_state
        pooled = POOLINGS[self.v["pooling"]](h, ids, mask, self.emb_id)
        return F.normalize(pooled.float(), dim=-1)

    # -- export ----------------------------------------------------------------------------------------
    def save_export(self, out: Path) -> None:
        """Merged: ``vlm/`` is a plain checkpoint (``AutoModel.from_pretrained`` reloads it). Adapter: ``adapter/``
        holds only the LoRA weights; the base is the pretrained folder named in ``spec["vlm"]["base"]``."""
        if self.v["export"] == "adapter" and hasattr(self.net, "peft_config"):
            self.net.save_pretrained(out / ADAPTER_DIR, save_embedding_layers=False)
            return
        state = merged_state_dict(self.net) if hasattr(self.net, "peft_config") else {
            k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        self.model.save_pretrained(out / VLM_DIR, state_dict=state)

    @classmethod
    def load_export(cls, model_dir: Path, spec: dict[str, Any], tokenizer: Any) -> VlmTowers:
        from transformers import AutoModel

        v = spec["vlm"]
        dtype = getattr(torch, v["dtype"])
        if (model_dir / ADAPTER_DIR).is_dir():
            from peft import PeftModel

            if not v.get("base") or not Path(v["base"]).is_dir():
                raise FileNotFoundError(f"{model_dir / ADAPTER_DIR}: its base model {v.get('base')!r} is not there")
            model = AutoModel.from_pretrained(v["base"], dtype=dtype)
            fit_vocabulary(model, tokenizer)
            model = PeftModel.from_pretrained(model, str(model_dir / ADAPTER_DIR)).merge_and_unload()
        else:
            model = AutoModel.from_pretrained(model_dir / VLM_DIR, dtype=dtype)
        return cls(model, spec, tokenizer.convert_tokens_to_ids(EMB))

    def own_keys(self) -> str:
        """State-dict prefix that the export folder itself carries (not model.safetensors)."""
        return "net."

    def text_tower(self) -> nn.Module:
        return self.model.language_model

    def configs(self) -> dict[str, Any]:
        return {}


def bidirectional_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """U-MARVEL's padding-only attention, built explicitly as an additive [B, 1, L, L] mask (eager and sdpa both
    add it): under sdpa U-MARVEL's own mask came back None for a batch without padding, and attention silently
    turned causal again (recipe note 7.9). Flash attention takes no such mask: use sdpa or eager."""
    keep = mask.bool()[:, None, None, :].expand(-1, 1, mask.shape[1], -1)
    return torch.zeros(keep.shape, dtype=dtype, device=mask.device).masked_fill(~keep, torch.finfo(dtype).min)

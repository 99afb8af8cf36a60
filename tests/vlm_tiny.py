"""Tiny Qwen2-VL / Qwen3-VL checkpoints built from configs (random weights, no downloads), saved the way the
hub ships them (a ``*ForConditionalGeneration``, its tokenizer with the stock Qwen2-VL chat template, and the
image processor's config), so that rare loads them exactly as it loads a real checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen2VLImageProcessorPil

# The chat template shipped in Qwen2-VL-2B/7B-Instruct's tokenizer_config.json (LamRA renders with it).
QWEN2VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in "
    "content or 'image_url' in content %}{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] "
    "== 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content %}"
    "{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}"
    "<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
            "<|video_pad|>"]
CORPUS = [
    "You are a helpful assistant.", "Summarize above sentence in one word: ", "Summarize above image in one word: ",
    "Summarize above image and sentence in one word: ", "Retrieve a photo that matches the caption.",
    "A red circle on a white field. A blue square next to a green triangle. system user assistant",
    "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 .,:;!?'\"-\n",
]


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = QWEN2VL_CHAT_TEMPLATE
    return fast


def _ids(tok: PreTrainedTokenizerFast) -> dict[str, int]:
    v = tok.get_vocab()
    return {"bos_token_id": None, "eos_token_id": v["<|im_end|>"], "pad_token_id": v["<|endoftext|>"],
            "image_token_id": v["<|image_pad|>"], "video_token_id": v["<|video_pad|>"],
            "vision_start_token_id": v["<|vision_start|>"], "vision_end_token_id": v["<|vision_end|>"]}


def qwen2vl_config(tok: PreTrainedTokenizerFast, vocab: int = 320):  # noqa: ANN201
    from transformers import Qwen2VLConfig

    return Qwen2VLConfig(
        text_config={"vocab_size": vocab, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 2048,
                     "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 2, 2]},
                     "attention_dropout": 0.0},
        vision_config={"depth": 1, "embed_dim": 32, "hidden_size": 64, "num_heads": 2, "mlp_ratio": 2,
                       "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "in_channels": 3},
        **_ids(tok))


def qwen25vl_config(tok: PreTrainedTokenizerFast, vocab: int = 320):  # noqa: ANN201
    from transformers import Qwen2_5_VLConfig

    return Qwen2_5_VLConfig(
        text_config={"vocab_size": vocab, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 2048,
                     "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 2, 2]}},
        vision_config={"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 64,
                       "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "in_channels": 3,
                       "window_size": 56, "fullatt_block_indexes": [1]},
        **_ids(tok))


def qwen3vl_config(tok: PreTrainedTokenizerFast, vocab: int = 320):  # noqa: ANN201
    from transformers import Qwen3VLConfig

    return Qwen3VLConfig(
        text_config={"vocab_size": vocab, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
                     "max_position_embeddings": 2048,
                     "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 2, 2],
                                         "mrope_interleaved": True}},
        vision_config={"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 64,
                       "patch_size": 16, "spatial_merge_size": 2, "temporal_patch_size": 2, "in_channels": 3,
                       "num_position_embeddings": 64, "deepstack_visual_indexes": [0]},
        **_ids(tok))


def save_tiny(out: Path, kind: str = "qwen2_vl", seed: int = 0) -> Path:
    """A checkpoint folder as the hub ships one: model, tokenizer (no ``<emb>`` yet), preprocessor config."""
    from transformers import (
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLForConditionalGeneration,
        Qwen3VLForConditionalGeneration,
    )

    tok = tiny_tokenizer()
    torch.manual_seed(seed)
    if kind == "qwen2_vl":
        model, patch = Qwen2VLForConditionalGeneration(qwen2vl_config(tok)), 14
        mean = std = None
    elif kind == "qwen2_5_vl":
        model, patch = Qwen2_5_VLForConditionalGeneration(qwen25vl_config(tok)), 14
        mean = std = None
    else:
        model, patch = Qwen3VLForConditionalGeneration(qwen3vl_config(tok)), 16
        mean = std = (0.5, 0.5, 0.5)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    kwargs = {"image_mean": mean, "image_std": std} if mean else {}
    Qwen2VLImageProcessorPil(patch_size=patch, merge_size=2, **kwargs).save_pretrained(out)
    return out

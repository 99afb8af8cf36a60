"""PIL preprocessing (CLIP recipe, no torchvision) and the collator's tensor layout."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from rare.model.preprocess import Collator, EncodeInput, preprocess_image

MEAN, STD = (0.5, 0.25, 0.125), (0.5, 0.5, 0.25)


def test_square_image_of_the_target_size_is_only_normalised() -> None:
    arr = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    out = preprocess_image(Image.fromarray(arr), 8, MEAN, STD)
    expected = (arr.astype(np.float32) / 255 - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    assert out.shape == (3, 8, 8) and out.dtype == torch.float32
    assert np.allclose(out.numpy(), expected.transpose(2, 0, 1), atol=1e-6)


def test_short_side_resized_then_centre_cropped() -> None:
    """A 40x20 image: left half red, right half blue, a green 10-px band in the middle -> the crop keeps the band."""
    img = Image.new("RGB", (40, 20), "red")
    img.paste((0, 0, 255), (20, 0, 40, 20))
    img.paste((0, 255, 0), (15, 0, 25, 20))
    out = preprocess_image(img, 10, (0, 0, 0), (1, 1, 1))
    assert out.shape == (3, 10, 10)
    # 40x20 -> 20x10, centre crop columns 5..15 of the resized image = original columns 10..30.
    centre = out[:, :, 5]
    assert centre[1].min() > 0.9 and centre[0].max() < 0.1  # green at the centre
    assert out[0, :, 0].mean() > 0.8 and out[2, :, -1].mean() > 0.8  # red on the left, blue on the right


def test_non_rgb_images_are_converted() -> None:
    gray = Image.new("L", (16, 16), 128)
    out = preprocess_image(gray, 16, (0, 0, 0), (1, 1, 1))
    assert out.shape == (3, 16, 16) and torch.allclose(out, torch.full((3, 16, 16), 128 / 255))


class _Tok:
    """A stand-in tokenizer: one id per character, padded to the longest."""

    def __call__(self, texts, padding, truncation, max_length, return_tensors):  # noqa: ANN001, ANN204
        ids = [[ord(c) for c in t][:max_length] for t in texts]
        width = max(len(x) for x in ids)
        return {"input_ids": torch.tensor([x + [0] * (width - len(x)) for x in ids]),
                "attention_mask": torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids])}


def test_collator_routes_only_present_modalities() -> None:
    c = Collator(_Tok(), max_text_len=3, image_size=4, image_mean=(0, 0, 0), image_std=(1, 1, 1))
    batch = c([EncodeInput("abcd", None), EncodeInput("", Image.new("RGB", (4, 4))),
               EncodeInput("x", Image.new("RGB", (4, 4), "white"))])
    assert int(batch["size"]) == 3
    assert batch["text_rows"].tolist() == [0, 2] and batch["image_rows"].tolist() == [1, 2]
    assert batch["input_ids"].tolist() == [[97, 98, 99], [120, 0, 0]]  # truncated to max_text_len, padded
    assert batch["pixel_values"].shape == (2, 3, 4, 4) and batch["pixel_values"][1].min() == 1.0
    empty = c([EncodeInput("", None)])
    assert empty["text_rows"].numel() == 0 and empty["pixel_values"].shape == (0, 3, 4, 4)


SIZES = ([(256, long) for long in range(257, 513)]            # short side 256, every long side 257..512
         + [(long, 256) for long in range(257, 513, 7)]       # the same, landscape
         + [(w, h) for w in (1, 3, 50, 223, 224, 225, 640) for h in (2, 224, 333, 1000)])


def test_equals_openai_clips_transform_exactly_on_every_size() -> None:
    """Max abs difference 0, not a tolerance, against torchvision's rules (tests/fixtures/uniir.py): the long
    side is truncated (int), never rounded, and the crop offset is rounded, never floored."""
    from rare.config.train import CLIP_MEAN, CLIP_STD
    from tests.fixtures.uniir import torchvision_clip_transform

    assert len(SIZES) >= 300
    base = np.random.default_rng(0).integers(0, 256, (1000, 1000, 3), dtype=np.uint8)
    worst = 0.0
    for w, h in SIZES:
        img = Image.fromarray(base[:h, :w])
        ours = preprocess_image(img, 224, CLIP_MEAN, CLIP_STD).numpy()
        theirs = torchvision_clip_transform(img, 224, CLIP_MEAN, CLIP_STD)
        assert ours.shape == theirs.shape == (3, 224, 224), (w, h)
        worst = max(worst, float(np.abs(ours - theirs).max()))
    assert worst == 0.0


def test_colour_modes_are_uniirs_convert_rgb_alpha_dropped_not_composited() -> None:
    """UniIR opens every image with PIL's ``convert("RGB")`` before OpenAI clip's transform (LamRA's
    qwen-vl-utils copy does the same): alpha is dropped, so a transparent pixel keeps the colour it stores.
    Reference: that conversion, then torchvision's rules (tests/fixtures/uniir.py); max abs difference 0."""
    from rare.config.train import CLIP_MEAN, CLIP_STD
    from tests.fixtures.uniir import torchvision_clip_transform

    rng = np.random.default_rng(1)
    rgb = Image.fromarray(rng.integers(0, 256, (300, 257, 3), dtype=np.uint8))
    pixels = rng.integers(0, 256, (300, 257, 4), dtype=np.uint8)
    pixels[::2, :, 3] = 0  # every other row fully transparent, over non-white colours
    rgba = Image.fromarray(pixels, "RGBA")
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    transparent = palette.copy()
    transparent.info["transparency"] = 3
    modes = [rgba, palette, transparent, rgb.convert("L"), rgba.convert("LA"), rgb.convert("CMYK"), rgb.convert("1")]
    for img in modes:
        ours = preprocess_image(img, 224, CLIP_MEAN, CLIP_STD).numpy()
        theirs = torchvision_clip_transform(img.convert("RGB"), 224, CLIP_MEAN, CLIP_STD)
        assert np.abs(ours - theirs).max() == 0.0, img.mode
    # the transparent rows are their stored colours, not white: the RGBA image is exactly its RGB channels
    assert torch.equal(preprocess_image(rgba, 224, CLIP_MEAN, CLIP_STD),
                       preprocess_image(Image.fromarray(pixels[..., :3]), 224, CLIP_MEAN, CLIP_STD))
    clear = Image.new("RGBA", (224, 224), (200, 10, 30, 0))  # fully transparent dark red stays dark red
    out = preprocess_image(clear, 224, (0, 0, 0), (1, 1, 1))
    assert torch.allclose(out[:, 0, 0], torch.tensor([200, 10, 30]) / 255)
    la = Image.new("LA", (224, 224), (40, 0))
    assert torch.allclose(preprocess_image(la, 224, (0, 0, 0), (1, 1, 1)), torch.full((3, 224, 224), 40 / 255))

"""The ``vlm`` family against a reference written from the recipe note (/work/shared/mllm-retriever-recipe.md
section 7), not from rare's code: the stock chat template renders the messages, ``<|image_pad|>`` is expanded to
grid_h*grid_w/4, the visual features are scattered into the image slots, the decoder runs with
``position_ids=None``, and the state at (first ``<emb>``) - 1 is L2-normalised.

Tiny Qwen2-VL / Qwen3-VL checkpoints are built from configs (tests/vlm_tiny.py); CPU, fp32.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from PIL import Image

from rare.config.train import ModelParams
from rare.data.views import format_string
from rare.model import EncodeInput, build_retriever
from tests.vlm_tiny import save_tiny

SUFFIX_TEXT = "\nSummarize above sentence in one word: "
SUFFIX_IMAGE = "\nSummarize above image in one word: "
SUFFIX_BOTH = "\nSummarize above image and sentence in one word: "
INSTR = "Retrieve a photo that matches the caption."


@pytest.fixture(scope="module", params=["qwen2_vl", "qwen3_vl"])
def base(request, tmp_path_factory) -> Path:  # noqa: ANN001
    import transformers

    transformers.utils.logging.set_verbosity_error()
    return save_tiny(tmp_path_factory.mktemp(request.param) / "ckpt", request.param)


@pytest.fixture(scope="module")
def qwen2(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("q2") / "ckpt", "qwen2_vl")


def _image(w: int, h: int, seed: int) -> Image.Image:
    return Image.fromarray((np.random.RandomState(seed).rand(h, w, 3) * 255).astype("uint8"))


def _retriever(base: Path, **vlm):  # noqa: ANN202
    vlm = {"model": {"pretrained": str(base)}, "lora": {"r": 4, "alpha": 8, "dropout": 0.0}, **vlm}
    return build_retriever(ModelParams(family="vlm", vlm=vlm)).eval()


def _items() -> list[EncodeInput]:
    """A text query, an image+text query, and a text, an image and an image+text candidate."""
    return [EncodeInput(f"{INSTR} a red circle", None), EncodeInput(f"{INSTR} a blue square", _image(64, 96, 1)),
            EncodeInput("A red circle on a white field.", None), EncodeInput("", _image(56, 56, 2)),
            EncodeInput("A green triangle.", _image(112, 56, 3))]


# -- the reference ----------------------------------------------------------------------------------------
class Reference:
    """Written from the note: stock template, hand-expanded image tokens, position_ids=None, h[emb - 1]."""

    def __init__(self, base: Path):
        from transformers import AutoModel, AutoTokenizer, Qwen2VLImageProcessorPil

        self.tok = AutoTokenizer.from_pretrained(base)
        self.tok.add_tokens(["<emb>"])
        self.model = AutoModel.from_pretrained(base).eval()
        self.model.resize_token_embeddings(len(self.tok), mean_resizing=False)
        self.proc = Qwen2VLImageProcessorPil.from_pretrained(base)
        self.factor = self.proc.patch_size * self.proc.merge_size

    def render(self, text: str, has_image: bool, train: bool = True) -> str:
        suffix = SUFFIX_BOTH if text and has_image else SUFFIX_IMAGE if has_image else SUFFIX_TEXT
        content = ([{"type": "image"}] if has_image else []) + [{"type": "text", "text": text + suffix}]
        messages = [{"role": "user", "content": content},
                    {"role": "assistant", "content": [{"type": "text", "text": "<emb>."}]}]
        return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=not train)

    def pixels(self, img: Image.Image):  # noqa: ANN201
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

        h, w = smart_resize(img.height, img.width, factor=self.factor, min_pixels=4 * self.factor ** 2,
                            max_pixels=300 * self.factor ** 2)
        out = self.proc(images=[img.convert("RGB").resize((w, h))], return_tensors="pt")
        return out["pixel_values"], out["image_grid_thw"]

    def batch(self, strings: list[str], images: list[Image.Image | None], side: str = "right"):  # noqa: ANN201
        pix, grids = [], []
        for i, img in enumerate(images):
            if img is not None:
                p, g = self.pixels(img)
                strings[i] = strings[i].replace("<|image_pad|>", "<|image_pad|>" * (int(g.prod()) // 4))
                pix.append(p)
                grids.append(g)
        tok = self.tok(strings, padding=True, padding_side=side, return_tensors="pt")
        return tok["input_ids"], tok["attention_mask"], (torch.cat(pix) if pix else None), \
            (torch.cat(grids) if grids else None)

    @torch.no_grad()
    def hidden(self, ids, mask, pix, grid, deepstack: bool = True, stock: bool = False):  # noqa: ANN001, ANN201
        m = self.model
        if stock:  # the library's own forward: 3-D M-RoPE positions (and DeepStack on Qwen3-VL)
            return m(input_ids=ids, attention_mask=mask, pixel_values=pix, image_grid_thw=grid,
                     mm_token_type_ids=(ids == m.config.image_token_id).int()).last_hidden_state
        emb = m.get_input_embeddings()(ids)
        extra = {}
        if pix is not None:
            out = m.get_image_features(pix, grid)
            slots = ids == m.config.image_token_id
            emb = emb.masked_scatter(slots.unsqueeze(-1), torch.cat(out.pooler_output))
            if deepstack and getattr(out, "deepstack_features", None) is not None:
                extra = {"visual_pos_masks": slots, "deepstack_visual_embeds": [torch.cat(f) for f in out.deepstack_features]}
        return m.language_model(inputs_embeds=emb, attention_mask=mask, position_ids=None, **extra).last_hidden_state

    def pool(self, h, ids):  # noqa: ANN001, ANN201
        first = (ids == self.tok.convert_tokens_to_ids("<emb>")).int().argmax(dim=1)
        return F.normalize(h[torch.arange(h.shape[0]), first - 1], dim=-1)

    def embed(self, items: list[EncodeInput], side: str = "right", train: bool = True, **kw) -> torch.Tensor:
        strings = [self.render(format_string(it.text), it.image is not None, train) for it in items]
        ids, mask, pix, grid = self.batch(strings, [it.image for it in items], side)
        return self.pool(self.hidden(ids, mask, pix, grid, **kw), ids)


# -- (b) the rendered strings and their token ids ---------------------------------------------------------
def test_rendered_strings_are_the_notes_byte_for_byte(qwen2: Path) -> None:
    r, ref = _retriever(qwen2), Reference(qwen2)
    col = r.collator()
    head = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
    tail = "<|im_end|>\n<|im_start|>assistant\n<emb>.<|im_end|>\n"
    vision = "<|vision_start|><|image_pad|><|vision_end|>"
    golden = {
        "text": (EncodeInput("a red circle", None), f"{head}A red circle.{SUFFIX_TEXT}{tail}"),
        "image": (EncodeInput("", _image(56, 56, 0)), f"{head}{vision}{SUFFIX_IMAGE}{tail}"),
        "image+text": (EncodeInput(f"{INSTR} a cat", _image(56, 56, 0)), f"{head}{vision}{INSTR} a cat.{SUFFIX_BOTH}{tail}"),
    }
    for kind, (item, expected) in golden.items():
        rendered = col.render(item)
        assert rendered == expected, kind
        assert rendered == ref.render(format_string(item.text), item.image is not None), kind
        assert expected.endswith("Summarize above " + {"text": "sentence", "image": "image",
                                                        "image+text": "image and sentence"}[kind] + " in one word: " + tail)
        ids, _, _, _ = ref.batch([expected], [item.image])
        assert col([item])["input_ids"].tolist() == ids.tolist(), kind
    # 4 visual tokens (56x56 px = 4x4 patches of 14, merged 2x2), the <emb> id is the first added after the vocab
    batch = col([golden["image"][0]])
    assert int((batch["input_ids"] == r.tokenizer.convert_tokens_to_ids("<|image_pad|>")).sum()) == 4
    assert r.tokenizer.convert_tokens_to_ids("<emb>") == 300


# -- (a) embeddings, (c) train vs eval rendering, (e) padding -----------------------------------------------
def test_embeddings_match_the_reference_alone_and_batched(base: Path) -> None:
    r, ref = _retriever(base), Reference(base)
    items = _items()
    with torch.no_grad():
        batched = r(r.collator()(items))
        alone = torch.cat([r(r.collator()([it])) for it in items])
    expected = ref.embed(items)
    assert batched.shape == (5, 64)
    assert torch.allclose(batched, expected, atol=1e-5)
    assert torch.allclose(alone, torch.cat([ref.embed([it]) for it in items]), atol=1e-5)
    assert torch.allclose(batched, alone, atol=1e-5)  # right padding
    assert torch.allclose(batched.norm(dim=1), torch.ones(5), atol=1e-6)


def test_train_and_eval_renderings_embed_identically(qwen2: Path) -> None:
    ref = Reference(qwen2)
    items = _items()
    train, evaluation = ref.embed(items, train=True), ref.embed(items, train=False)
    assert ref.render("x", False, train=False).endswith("<emb>.<|im_end|>\n<|im_start|>assistant\n")
    assert torch.allclose(train, evaluation, atol=1e-6, rtol=0)  # only the padded length differs


def test_pooled_position_is_the_token_before_emb_for_either_padding(qwen2: Path) -> None:
    items = _items()
    outs = {}
    for side in ("right", "left"):
        r = _retriever(qwen2, padding_side=side)
        batch = r.collator()(items)
        ids = batch["input_ids"]
        emb = r.tokenizer.convert_tokens_to_ids("<emb>")
        before = ids[torch.arange(5), (ids == emb).int().argmax(dim=1) - 1]
        newline_after_assistant = r.tokenizer("<|im_start|>assistant\n")["input_ids"][-1]
        assert before.tolist() == [newline_after_assistant] * 5
        with torch.no_grad():
            outs[side] = r(batch)
            alone = torch.cat([r(r.collator()([it])) for it in items])
        assert torch.allclose(outs[side], alone, atol=1e-5 if side == "right" else 1e-4), side
    assert torch.allclose(outs["right"], outs["left"], atol=1e-4)


def test_an_entry_over_max_len_fails_loudly(qwen2: Path) -> None:
    r = _retriever(qwen2, max_len=40)
    with pytest.raises(ValueError, match=r"entry 1 of the batch is \d+ tokens, over vlm.max_len 40"):
        r.collator()([EncodeInput("a", None), EncodeInput("a red circle " * 20, None)])


# -- (d) positions: LamRA's 1-D vs the stock 3-D M-RoPE --------------------------------------------------
def test_mrope_sentinel(qwen2: Path) -> None:
    ref = Reference(qwen2)
    items = [EncodeInput("a blue square", _image(56, 84, 4))]
    strings = [ref.render("A blue square.", True)]
    ids, mask, pix, grid = ref.batch(strings, [items[0].image])
    stock = ref.pool(ref.hidden(ids, mask, pix, grid, stock=True), ids)
    with torch.no_grad():
        lamra = _retriever(qwen2)(_retriever(qwen2).collator()(items))
        mrope_r = _retriever(qwen2, positions="mrope")
        mrope = mrope_r(mrope_r.collator()(items))
    assert (lamra - stock).abs().max() > 1e-4        # LamRA's positions are not the stock forward's
    assert torch.allclose(mrope, stock, atol=1e-5)   # ... which the switch reproduces
    assert torch.allclose(lamra, ref.embed(items), atol=1e-5)


# -- (h) Qwen3-VL DeepStack policy -------------------------------------------------------------------------
def test_qwen3_deepstack_policy(tmp_path: Path) -> None:
    base = save_tiny(tmp_path / "q3", "qwen3_vl")
    ref = Reference(base)
    items = _items()
    with torch.no_grad():
        inject = _retriever(base)(_retriever(base).collator()(items))
        drop_r = _retriever(base, deepstack="drop")
        drop = drop_r(drop_r.collator()(items))
        stock_r = _retriever(base, positions="mrope")
        stock_rare = stock_r(stock_r.collator()(items))
    assert torch.allclose(inject, ref.embed(items, deepstack=True), atol=1e-5)
    assert torch.allclose(drop, ref.embed(items, deepstack=False), atol=1e-5)  # U-MARVEL's path
    has_image = torch.tensor([it.image is not None for it in items])
    assert (inject - drop)[has_image].abs().max() > 1e-4
    assert torch.equal(inject[~has_image], drop[~has_image])
    strings = [ref.render(format_string(it.text), it.image is not None) for it in items]
    ids, mask, pix, grid = ref.batch(strings, [it.image for it in items])
    assert torch.allclose(stock_rare, ref.pool(ref.hidden(ids, mask, pix, grid, stock=True), ids), atol=1e-5)


# -- (i) the VLM2Vec switch ----------------------------------------------------------------------------------
def test_vlm2vec_switch(qwen2: Path) -> None:
    r = _retriever(qwen2, prompt="vlm2vec", pooling="last", temperature=0.02)
    ref = Reference(qwen2)
    img = _image(56, 56, 5)
    items = [EncodeInput(f"{INSTR} a cat", img), EncodeInput("A cat", None), EncodeInput("", img)]
    col = r.collator()
    assert col.render(items[0]) == f"<|image_pad|> {INSTR} a cat."
    assert col.render(items[1]) == "A cat."
    assert col.render(items[2]) == "<|image_pad|>"
    assert math.isclose(float(r.scale()), 50.0, rel_tol=1e-6)
    batch = col(items)
    strings = [f"<|image_pad|> {INSTR} a cat.", "A cat.", "<|image_pad|>"]
    ids, mask, pix, grid = ref.batch(strings, [img, None, img])
    assert batch["input_ids"].tolist() == ids.tolist()
    h = ref.hidden(ids, mask, pix, grid)
    last = mask.sum(dim=1) - 1
    expected = F.normalize(h[torch.arange(3), last], dim=-1)
    with torch.no_grad():
        assert torch.allclose(r(batch), expected, atol=1e-5)


def test_bidirectional_switch_lets_later_tokens_reach_the_pooled_one(qwen2: Path) -> None:
    causal, bidir = _retriever(qwen2), _retriever(qwen2, attention="bidirectional")
    a, b = EncodeInput("a red circle", None), EncodeInput("a red circle", None)
    with torch.no_grad():
        # Causal: a batch-mate's padding cannot change an entry; bidirectional: masked padding cannot either.
        one = bidir(bidir.collator()([a]))
        two = bidir(bidir.collator()([b, EncodeInput("a much longer text about a blue square", None)]))
        assert torch.allclose(one, two[:1], atol=1e-5)
        assert (one - causal(causal.collator()([a]))).abs().max() > 1e-4


# -- (f) the loss over two ranks -----------------------------------------------------------------------------
def _unit(seed: int, n: int, d: int = 8) -> torch.Tensor:
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


def _rank(rank: int, world: int, init: str, out: str) -> None:
    from rare.train.loss import contrastive_loss

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    q, c, n = (_unit(s, 6)[3 * rank:3 * rank + 3].clone().requires_grad_(True) for s in (1, 2, 3))
    loss = contrastive_loss(q, c, torch.tensor(20.0))
    loss.backward()
    q2 = q.detach().clone().requires_grad_(True)
    loss_neg = contrastive_loss(q2, c.detach(), torch.tensor(20.0), negatives=n.detach())
    torch.save({"loss": loss.detach(), "gq": q.grad, "gc": c.grad, "loss_neg": loss_neg.detach()}, f"{out}/{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow
def test_loss_over_two_ranks_is_the_hand_computed_global_ce(tmp_path: Path) -> None:
    mp.spawn(_rank, args=(2, f"file://{tmp_path}/init", str(tmp_path)), nprocs=2, join=True)
    q, c, n = (_unit(s, 6).requires_grad_(True) for s in (1, 2, 3))
    s = (q @ c.T) / 0.05
    logp = s - s.logsumexp(dim=1, keepdim=True)
    hand = -logp.diagonal().mean()
    hand.backward()
    s_neg = (q.detach() @ torch.cat([c.detach(), n.detach()]).T) / 0.05
    hand_neg = -(s_neg - s_neg.logsumexp(dim=1, keepdim=True)).diagonal().mean()
    for rank in (0, 1):
        got = torch.load(tmp_path / f"{rank}.pt")
        assert abs(float(got["loss"]) - float(hand.detach())) < 1e-5
        assert abs(float(got["loss_neg"]) - float(hand_neg)) < 1e-5 and float(hand_neg) > float(hand.detach())
        # Each rank's rows get the global loss's gradient summed over both ranks (2x); DDP's average of the
        # parameter gradients then gives the single-process gradient (rare.train.loss).
        rows = slice(3 * rank, 3 * rank + 3)
        assert torch.allclose(got["gq"], 2 * q.grad[rows], atol=1e-5)
        assert torch.allclose(got["gc"], 2 * c.grad[rows], atol=1e-5)


# -- (g) where LoRA goes -------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
def test_lora_wraps_exactly_the_seven_llm_linears(kind: str, tmp_path: Path) -> None:
    from peft.tuners.lora import LoraLayer

    base = save_tiny(tmp_path / kind, kind)
    r = _retriever(base)
    wrapped = sorted(n for n, m in r.named_modules() if isinstance(m, LoraLayer))
    layers = r.towers.model.config.text_config.num_hidden_layers
    assert len(wrapped) == 7 * layers
    assert all(".language_model.layers." in n for n in wrapped)
    assert not any(".visual." in n for n in wrapped)
    kinds = sorted({n.rsplit(".", 1)[-1] for n in wrapped})
    assert kinds == sorted(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    trainable = [n for n, p in r.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert not any("lm_head" in n for n, _ in r.named_parameters())
    # step 0: B = 0, so the wrapped model embeds exactly as the base does
    items = _items()
    with torch.no_grad():
        assert torch.allclose(r(r.collator()(items)), Reference(base).embed(items), atol=1e-5)


def test_unknown_backbone_is_one_clear_error(tmp_path: Path) -> None:
    from rare.model.vlm import backbone

    with pytest.raises(ValueError, match="model_type 'llava' is not supported"):
        backbone("llava")



def test_transparency_is_dropped_as_lamras_convert_rgb_drops_it(qwen2: Path) -> None:
    """LamRA's qwen-vl-utils copy runs ``convert("RGB")`` before smart_resize: alpha is dropped, so the pixels of
    an RGBA image are those of its own RGB channels, transparent ones (stored dark red here) included."""
    r = _retriever(qwen2)
    col = r.collator()
    pixels = np.random.RandomState(3).randint(0, 256, (70, 98, 4)).astype("uint8")
    pixels[:, ::2] = (200, 10, 30, 0)  # every other column fully transparent, non-white
    rgba = Image.fromarray(pixels, "RGBA")
    got = col([EncodeInput("a", rgba)])["pixel_values"]
    assert torch.equal(got, col([EncodeInput("a", Image.fromarray(pixels[..., :3]))])["pixel_values"])
    white = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    assert not torch.equal(got, col([EncodeInput("a", white)])["pixel_values"])

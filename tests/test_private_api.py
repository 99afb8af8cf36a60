"""rare runs on torch's and transformers' public API only: a release may change or drop private internals
(``torch.ops.<lib>._x``, ``torch._C``, ``transformers.<module>._x``) without notice."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
# A private name: a dotted torch/transformers path with a segment that starts with one underscore.
PRIVATE = re.compile(r"\b(?:torch|transformers)(?:\.[A-Za-z0-9]\w*)*\.(_[A-Za-z0-9]\w*)")


def private_uses(text: str) -> list[str]:
    return [m.group(0) for m in PRIVATE.finditer(text) if not m.group(1).startswith("__")]


def test_the_scan_sees_a_private_call() -> None:
    assert private_uses("torch.ops.mkldnn._is_mkldnn_bf16_supported()") == ["torch.ops.mkldnn._is_mkldnn_bf16_supported"]
    assert private_uses("x = torch._C._get_tracing_state()") == ["torch._C"]
    assert private_uses("from transformers.models.bert import _x") == []  # an import line: caught below
    assert private_uses("torch.nn.functional.linear(x, w); torch.__version__") == []


def test_src_uses_no_private_torch_or_transformers_api() -> None:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            hits = private_uses(code)
            imported = re.match(r"\s*from\s+(torch|transformers)[\w.]*\s+import\s+(.*)", code)
            if imported:
                hits += [n for n in re.split(r"[\s,()]+", imported.group(2)) if n.startswith("_") and not n.startswith("__")]
            found += [f"{path.relative_to(SRC)}:{no}: {h}" for h in hits]
    assert found == []


@pytest.mark.parametrize(("caps", "expected"), [
    ({"avx2": True, "avx512_bf16": False}, False),  # this machine's kind: AVX2 only
    ({"avx512_f": True, "avx512_bw": True, "avx512_vl": True, "avx512_dq": True}, True),
    ({"avx512_f": True, "avx512_bw": True, "avx512_vl": False, "avx512_dq": True}, False),
    ({"avx2": True, "avx_ne_convert": True}, True),
    ({"bf16": True}, True),  # Arm's BF16 extension
])
def test_auto_precision_on_cpu_follows_the_public_capabilities(caps: dict[str, bool], expected: bool) -> None:
    from rare.evaluate.embed import cpu_runs_bf16

    assert cpu_runs_bf16(caps) is expected


def test_auto_precision_on_this_cpu() -> None:
    import torch

    from rare.evaluate.embed import resolve_precision

    caps = torch.cpu.get_capabilities()
    if not (caps.get("avx512_f") or caps.get("avx_ne_convert") or caps.get("bf16")):
        assert resolve_precision("auto", "cpu") == "fp32"  # e.g. AVX2 only: oneDNN has no bf16 kernels
    assert resolve_precision("auto", "cuda:0") == "bf16" and resolve_precision("fp32", "cuda") == "fp32"

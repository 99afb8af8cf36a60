"""Export and load a retriever: safetensors weights + configs + tokenizer + training metadata.

Layout of an export directory::

    retriever.json        spec: family, embed_dim, pooling, image size/normalisation, max text length
    model.safetensors     every weight (no pickle anywhere)
    towers/<name>/        HF config of each tower (text, vision | clip)
    tokenizer/            the tokenizer files
    meta.json             training metadata: variant, text modes, instruction seed, steps, val losses
    manifest.json         size and sha256 of every file above (written last; checked on every load)

Writes go to a temp sibling and are renamed into place, so a killed export leaves no half model.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from rare.atomic import atomic_write, replacing_folder
from rare.contracts import ModelMeta
from rare.manifest import MANIFEST_FILE, verify, write_folder_manifest
from rare.model.families import family
from rare.model.retriever import Retriever

SPEC_FILE, WEIGHTS_FILE, META_FILE = "retriever.json", "model.safetensors", "meta.json"
FORMAT = 1
WEIGHTS_METADATA = {"format": "pt", "rare_format": str(FORMAT)}


def save_weights(state: dict[str, torch.Tensor], path: Path) -> None:
    """safetensors with its header in one fixed order: the library writes its metadata map in an order
    that changes from process to process, and identical weights must give identical bytes (DVC hashes)."""
    blob = save(state, metadata=WEIGHTS_METADATA)
    size = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + size])
    fixed = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    fixed += b" " * (-len(fixed) % 8)  # the data section stays 8-byte aligned
    atomic_write(path, [len(fixed).to_bytes(8, "little"), fixed, memoryview(blob)[8 + size:]])


def save_retriever(retriever: Retriever, out: str | Path, meta: ModelMeta | None = None) -> Path:
    """Write the export beside ``out`` and swap it in whole, with ``meta`` (default: the retriever's own)."""
    out = Path(out)
    with replacing_folder(out) as tmp:
        _write_export(retriever, tmp, meta)
    return out


def _write_export(retriever: Retriever, tmp: Path, meta: ModelMeta | None) -> None:
    (tmp / SPEC_FILE).write_text(json.dumps(retriever.spec, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    own = f"towers.{retriever.towers.own_keys()}" if retriever.family.joint else None
    state = {k: v.detach().cpu().contiguous() for k, v in retriever.state_dict().items()
             if own is None or not k.startswith(own)}
    save_weights(state, tmp / WEIGHTS_FILE)
    if own is not None:  # the model folder carries its own weights (rare.model.vlm: merged, or an adapter)
        retriever.towers.save_export(tmp)
    for name, config in retriever.towers.configs().items():
        config.save_pretrained(tmp / "towers" / name)
    retriever.tokenizer.save_pretrained(str(tmp / "tokenizer"))
    meta_json = (meta or retriever.meta).to_json()
    (tmp / META_FILE).write_text(json.dumps(meta_json, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    write_folder_manifest(tmp)  # last: a load checks every file above against it


def load_retriever(model_dir: str | Path, device: str | torch.device = "cpu") -> Retriever:
    """Rebuild from the export alone (no hub, no pickle), in eval mode on ``device``.

    Every file is checked against the export's manifest first (a load reads them all anyway): a missing
    tokenizer file or meta.json must stop the load, never fall back to a default and score differently."""
    from safetensors import SafetensorError
    from transformers import AutoConfig, AutoTokenizer

    model_dir = Path(model_dir)
    spec_file = model_dir / SPEC_FILE
    if not spec_file.is_file():
        raise FileNotFoundError(f"{model_dir}: not a retriever export ({SPEC_FILE} is missing)")
    verify(model_dir / MANIFEST_FILE, full=True)
    try:
        spec = json.loads(spec_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{spec_file}: not valid JSON ({exc})") from None
    if spec.get("format") != FORMAT:
        raise ValueError(f"{spec_file}: unsupported format {spec.get('format')!r}; this code reads format {FORMAT}")
    fam = family(spec["family"])
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir / "tokenizer"), local_files_only=True)
    if fam.joint:
        towers = fam.towers.load_export(model_dir, spec, tokenizer)
    else:
        configs = {name: AutoConfig.from_pretrained(model_dir / "towers" / name) for name in fam.towers.config_names}
        towers = fam.towers.from_configs(configs, spec)
    meta = ModelMeta.read(model_dir / META_FILE)
    retriever = Retriever(towers, tokenizer, spec, meta)
    try:
        state = load_file(str(model_dir / WEIGHTS_FILE))
    except SafetensorError as exc:
        raise ValueError(f"{model_dir / WEIGHTS_FILE}: not a readable safetensors file ({exc})") from None
    own = f"towers.{towers.own_keys()}" if fam.joint else None
    try:
        result = retriever.load_state_dict(state, strict=own is None)
    except RuntimeError as exc:
        raise ValueError(f"{model_dir / WEIGHTS_FILE}: weights do not match the exported architecture ({exc})") from None
    if own is not None and (result.unexpected_keys or any(not k.startswith(own) for k in result.missing_keys)):
        raise ValueError(f"{model_dir / WEIGHTS_FILE}: weights do not match the exported architecture "
                         f"(missing {[k for k in result.missing_keys if not k.startswith(own)][:5]}, "
                         f"unexpected {result.unexpected_keys[:5]})")
    retriever.to(device).eval()
    retriever.freeze_fingerprint()
    return retriever

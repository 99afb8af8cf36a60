"""Load ``params.yaml`` (the only config) into typed, validated sections.

Each stage reads only its own section. ``profile`` selects a set of overrides under
``profiles.<name>`` (e.g. ``mbeir`` for real runs), so the real profile is one key away.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from rare.config.base import Section
from rare.config.data import DataParams
from rare.config.enhance import EnhanceParams
from rare.config.evaluate import EvaluateParams
from rare.config.pretrain import PretrainParams
from rare.config.report import ReportParams
from rare.config.tracking import TrackingParams
from rare.config.train import TrainParams

SECTIONS: dict[str, type[Section]] = {
    "data": DataParams,
    "enhance": EnhanceParams,
    "pretrain": PretrainParams,
    "train": TrainParams,
    "evaluate": EvaluateParams,
    "report": ReportParams,
    "tracking": TrackingParams,
}
TOP_LEVEL = {"profile", "profiles", *SECTIONS}
S = TypeVar("S", bound=BaseModel)


class ConfigError(ValueError):
    pass


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _describe(exc: ValidationError, section: str, model: type[BaseModel], where: str) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in (section, *err["loc"]))
        if err["type"] == "extra_forbidden":
            parent: Any = model
            for part in err["loc"][:-1]:
                field = getattr(parent, "model_fields", {}).get(part)
                parent = field.annotation if field is not None else None
            allowed = sorted(getattr(parent, "model_fields", {}) or [])
            lines.append(f"{where}: {key}: unknown key; allowed keys: {allowed}")
        else:
            lines.append(f"{where}: {key}: {err['msg']} (got {err.get('input')!r})")
    return "\n".join(lines)


def raw_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """The YAML with the active profile's overrides applied."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: params file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({exc})") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    unknown = sorted(set(doc) - TOP_LEVEL)
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key(s) {unknown}; allowed: {sorted(TOP_LEVEL)}")
    profile = doc.get("profile", "embedded")
    profiles = doc.get("profiles") or {}
    if profile != "embedded" and profile not in profiles:
        raise ConfigError(f"{path}: profile: {profile!r} is not defined; allowed: {['embedded', *sorted(profiles)]}")
    overrides = profiles.get(profile) or {}
    bad = sorted(set(overrides) - set(SECTIONS))
    if bad:
        raise ConfigError(f"{path}: profiles.{profile}: unknown section(s) {bad}; allowed: {sorted(SECTIONS)}")
    sections = {name: doc.get(name) or {} for name in SECTIONS}
    return {"profile": profile, **_merge(sections, overrides)}


def load_section(name: str, path: str | Path = "params.yaml") -> Any:
    """Validate and return one section (with the active profile applied)."""
    if name not in SECTIONS:
        raise ConfigError(f"unknown params section {name!r}; allowed: {sorted(SECTIONS)}")
    raw = raw_params(path)
    model = SECTIONS[name]
    try:
        return model.model_validate(raw[name])
    except ValidationError as exc:
        raise ConfigError(_describe(exc, name, model, str(path))) from None


def load_all(path: str | Path = "params.yaml") -> dict[str, Any]:
    """Every section validated: what `rare params check` runs."""
    return {name: load_section(name, path) for name in SECTIONS}

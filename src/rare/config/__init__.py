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


Lines = dict[tuple[str, ...], int]  # key path -> line in params.yaml


class _StrictLoader(yaml.SafeLoader):
    """PyYAML silently keeps the last of two equal keys; here that is an error at the second one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark.line)
            except TypeError:  # an unhashable key (a list or a mapping as key)
                raise yaml.MarkedYAMLError(problem=f"a key must be a plain value, got {key!r}",
                                           problem_mark=key_node.start_mark) from None
            if first != key_node.start_mark.line:
                raise yaml.MarkedYAMLError(problem=f"duplicate key {key!r} (first on line {first + 1})",
                                           problem_mark=key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def _key_lines(node: yaml.Node, prefix: tuple[str, ...] = ()) -> Lines:
    lines: Lines = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            path = (*prefix, str(key_node.value))
            lines[path] = key_node.start_mark.line + 1
            lines.update(_key_lines(value_node, path))
    return lines


def _read_yaml(path: Path) -> tuple[Any, Lines]:
    """The document and the line of every key; every problem names the file and the line."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"{path}: params file not found") from None
    except UnicodeDecodeError as exc:
        line = exc.object[:exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not valid UTF-8 (byte 0x{exc.object[exc.start]:02x})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise ConfigError(f"{path}:1: params file is empty; it needs at least the stage sections")
        doc = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{line}: invalid YAML ({exc.problem or exc.context})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({exc})") from None
    finally:
        loader.dispose()
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}:{node.start_mark.line + 1}: expected a mapping of sections at the top level, "
                          f"got {type(doc).__name__}")
    return doc, _key_lines(node)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _source(loc: tuple[str, ...], overrides: dict[str, Any], profile: str) -> tuple[str, ...]:
    """Where a merged value came from: the active profile's override if it set (a parent of) it."""
    node: Any = overrides
    for i, part in enumerate(loc):
        if not isinstance(node, dict) or part not in node:
            return loc
        node = node[part]
        if not isinstance(node, dict) and i < len(loc) - 1:
            return ("profiles", profile, *loc[: i + 1])
    return ("profiles", profile, *loc)


def _where(path: str, lines: Lines, key: tuple[str, ...]) -> str:
    """file:line of the deepest key of ``key`` that is written in the file."""
    for n in range(len(key), 0, -1):
        if key[:n] in lines:
            return f"{path}:{lines[key[:n]]}"
    return path


def _describe(exc: ValidationError, section: str, model: type[BaseModel], raw: dict[str, Any]) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(str(p) for p in (section, *err["loc"]))
        full = _source(loc, raw["overrides"], raw["profile"])
        key, where = ".".join(full), _where(raw["path"], raw["lines"], full)
        if err["type"] == "extra_forbidden":
            parent: Any = model
            for part in err["loc"][:-1]:
                field = getattr(parent, "model_fields", {}).get(part)
                parent = field.annotation if field is not None else None
            allowed = sorted(getattr(parent, "model_fields", {}) or [])
            lines.append(f"{where}: {key}: unknown key; allowed keys: {allowed}")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            got = f" (got {err.get('input')!r})" if err["loc"] else ""  # a whole section is too much to print
            lines.append(f"{where}: {key}: {msg}{got}")
    return "\n".join(lines)


def _mapping(value: Any, path: Path, lines: Lines, key: tuple[str, ...]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{_where(str(path), lines, key)}: {'.'.join(key)}: expected a mapping, "
                          f"got {type(value).__name__}")
    return value


def _resolve(path: str | Path) -> dict[str, Any]:
    """The sections with the active profile's overrides applied, plus what error messages need."""
    path = Path(path)
    doc, lines = _read_yaml(path)
    unknown = sorted(set(map(str, doc)) - TOP_LEVEL)
    if unknown:
        raise ConfigError(f"{_where(str(path), lines, (unknown[0],))}: unknown top-level key(s) {unknown}; "
                          f"allowed: {sorted(TOP_LEVEL)}")
    profile = doc.get("profile", "embedded")
    profiles = _mapping(doc.get("profiles"), path, lines, ("profiles",))
    if not isinstance(profile, str) or (profile != "embedded" and profile not in profiles):
        raise ConfigError(f"{_where(str(path), lines, ('profile',))}: profile: {profile!r} is not defined; "
                          f"allowed: {['embedded', *sorted(map(str, profiles))]}")
    overrides = _mapping(profiles.get(profile), path, lines, ("profiles", profile))
    bad = sorted(set(map(str, overrides)) - set(SECTIONS))
    if bad:
        raise ConfigError(f"{_where(str(path), lines, ('profiles', profile, bad[0]))}: profiles.{profile}: unknown "
                          f"section(s) {bad}; allowed: {sorted(SECTIONS)}")
    for name in overrides:
        _mapping(overrides[name], path, lines, ("profiles", profile, name))
    sections = {name: _mapping(doc.get(name), path, lines, (name,)) for name in SECTIONS}
    return {"profile": profile, "sections": _merge(sections, overrides), "overrides": overrides,
            "path": str(path), "lines": lines}


def raw_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """The YAML with the active profile's overrides applied."""
    resolved = _resolve(path)
    return {"profile": resolved["profile"], **resolved["sections"]}


def load_section(name: str, path: str | Path = "params.yaml") -> Any:
    """Validate and return one section (with the active profile applied)."""
    if name not in SECTIONS:
        raise ConfigError(f"unknown params section {name!r}; allowed: {sorted(SECTIONS)}")
    resolved = _resolve(path)
    model = SECTIONS[name]
    try:
        return model.model_validate(resolved["sections"][name])
    except ValidationError as exc:
        raise ConfigError(_describe(exc, name, model, resolved)) from None


def load_all(path: str | Path = "params.yaml") -> dict[str, Any]:
    """Every section validated: what `rare params check` runs."""
    return {name: load_section(name, path) for name in SECTIONS}

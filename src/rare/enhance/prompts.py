"""Versioned prompt templates: ``prompts/<version>/<template>.txt``.

A template file has a ``[system]`` and a ``[user]`` section; ``{text}`` in the user section is
replaced by the item's original text. Each template's digest goes into the cache key, so editing
a prompt (even without bumping the version) never serves stale generations.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rare.config.ops import CAPTION, NONE, OPS
from rare.hashing import key_digest

PROMPTS_DIR = Path(__file__).parent / "prompts"
TEXT_SLOT = "{text}"


@dataclass(frozen=True)
class Template:
    name: str
    system: str
    user: str
    digest: str

    @property
    def uses_text(self) -> bool:
        return TEXT_SLOT in self.user

    def render(self, text: str) -> str:
        return self.user.replace(TEXT_SLOT, text)


def template_name(op: str, side: str) -> str:
    """Captions differ per side only in their word cap (100 for the corpus, 50 for queries)."""
    return f"{CAPTION}_{side}" if op == CAPTION else op


def _parse(path: Path) -> Template:
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() in ("[system]", "[user]"):
            current = sections.setdefault(line.strip()[1:-1], [])
        elif current is None:
            if line.strip():
                raise ValueError(f"{path}: text before the first [system]/[user] section")
        else:
            current.append(line)
    system, user = ("\n".join(sections.get(k, [])).strip() for k in ("system", "user"))
    if not user:
        raise ValueError(f"{path}: empty or missing [user] section")
    return Template(path.stem, system, user, key_digest(system, user))


@dataclass(frozen=True)
class PromptSet:
    version: str
    templates: dict[str, Template]

    @classmethod
    def load(cls, version: str, root: Path = PROMPTS_DIR) -> PromptSet:
        folder = root / version
        if not folder.is_dir():
            known = sorted(p.name for p in root.iterdir() if p.is_dir())
            raise ValueError(f"enhance.prompt_version: unknown version {version!r}; available: {known}")
        templates = {p.stem: _parse(p) for p in sorted(folder.glob("*.txt"))}
        needed = {template_name(op, side) for op in OPS if op != NONE for side in ("corpus", "query")}
        missing = sorted(needed - set(templates))
        if missing:
            raise ValueError(f"{folder}: missing prompt template(s) {[m + '.txt' for m in missing]}")
        return cls(version, templates)

    def template(self, op: str, side: str) -> Template:
        return self.templates[template_name(op, side)]

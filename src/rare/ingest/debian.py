"""Real images with human-written text that install offline: three Debian packages turned into captions files
that ``rare import`` reads (``rare debian-sources``). Docs: docs/realworld.md.

  tuxstamps    tuxpaint-stamps-default: stamps with a description each (the .txt beside it, English line);
               variants of one stamp (frog.png, frog-1.png) share a group
  openclipart  openclipart-svg: public-domain drawings, text = title (+ description), keywords when the title
               is boilerplate ("Clipart by ...")
  notoemoji    fonts-noto-color-emoji + unicode-data + unicode-cldr-core: emoji rendered with Pillow from the
               colour font, text = the official name + CLDR keywords; skin-tone variants share a group

SVGs are rasterised with cairosvg. Items are chosen before any rendering, by a hash of their path (not
by folder order), so ``--max-per-source`` keeps a fixed, spread-out sample.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rare.atomic import atomic_write, atomic_write_text

TUX = Path("/usr/share/tuxpaint/stamps")
CLIPART = Path("/usr/share/openclipart/svg")
EMOJI_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
EMOJI_TEST = Path("/usr/share/unicode/emoji/emoji-test.txt")
CLDR_EN = Path("/usr/share/unicode/cldr/common/annotations/en.xml")
RASTER_PX = 192  # SVGs are drawn this wide, larger PNG stamps shrunk to it (the pipeline's towers read 64 px)
MAX_SVG_BYTES = 400_000  # bigger drawings take seconds each to rasterise
SKIN = re.compile("[\U0001F3FB-\U0001F3FF]")


@dataclass(frozen=True)
class Entry:
    key: str  # unique within the source; the file name of a rendered image
    text: str
    group: str | None
    image: Callable[[], bytes]  # renders (or reads) the PNG bytes written under the source's images/


@dataclass(frozen=True)
class DebianSource:
    name: str
    packages: tuple[str, ...]
    marker: Path  # present when the packages are installed
    entries: Callable[[], Iterator[Entry]]


def _svg(path: Path) -> Callable[[], bytes]:
    def render() -> bytes:
        import cairosvg

        return _shrink(cairosvg.svg2png(url=str(path), output_width=RASTER_PX, background_color="white"))

    return render


def _shrink(data: bytes) -> bytes:
    """A PNG at most RASTER_PX on its long side, drawn on white where it has transparent pixels; ``data`` itself
    when it is that already. Stamps run up to ~520 px and tall drawings drawn 192 px wide up to ~1,600 px high:
    decoding them cost 3-4x the other images' time at every training step and evaluation pass, for towers that
    read 64 px. Tux Paint shows a stamp on a white canvas, but its PNGs store black or leftover colours under
    transparent pixels, and loaders drop alpha as UniIR does (``rare.data.images.to_rgb``): flattened here, the
    root holds what a person sees, as M-BEIR's JPEGs do."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        alpha = "A" in img.getbands() or img.mode == "P" or "transparency" in img.info
        rgba = img.convert("RGBA" if alpha else "RGB")
    see_through = alpha and rgba.getchannel("A").getextrema()[0] < 255
    if max(rgba.size) <= RASTER_PX and not see_through:
        return data
    rgba.thumbnail((RASTER_PX, RASTER_PX), Image.Resampling.LANCZOS)  # in RGBA: edges blend with transparency
    out = rgba
    if see_through:
        out = Image.new("RGB", rgba.size, (255, 255, 255))
        out.paste(rgba, mask=rgba.getchannel("A"))
    buf = io.BytesIO()
    out.save(buf, format="PNG")
    return buf.getvalue()


def _png(path: Path) -> Callable[[], bytes]:
    return lambda: _shrink(path.read_bytes())


def _tux() -> Iterator[Entry]:
    for txt in sorted(TUX.rglob("*.txt")):
        stem = txt.with_suffix("")
        image = next((p for p in (stem.with_suffix(".png"), stem.with_suffix(".svg")) if p.is_file()), None)
        if image is None:
            continue
        lines = [ln.strip() for ln in txt.read_text(encoding="utf-8", errors="replace").splitlines()]
        text = next((ln for ln in lines if ln and not re.match(r"^[\w@-]+\.utf8=", ln)), "")
        if not text:
            continue
        rel = stem.relative_to(TUX)
        group = re.sub(r"-\d+$", "", str(rel))
        yield Entry(str(rel).replace("/", "_"), text, group, _png(image) if image.suffix == ".png" else _svg(image))


_DC = {"dc": "http://purl.org/dc/elements/1.1/", "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#"}
_BOILERPLATE = re.compile(r"clipart by|part of the flat icon collection|^architetto|^various clip|^untitled|^drawing|^image\d*$|^svg", re.I)


def clipart_text(svg: Path) -> str | None:
    """Title (+ description of four words or more); the keywords when the title is boilerplate or missing."""
    try:
        root = ET.parse(svg).getroot()
    except (ET.ParseError, OSError):
        return None
    work = next((el for el in root.iter() if str(el.tag).endswith("}Work")), None)  # two cc namespaces in use
    if work is None:
        return None
    title = " ".join((work.findtext("dc:title", "", _DC) or "").split())
    desc = " ".join((work.findtext("dc:description", "", _DC) or "").split())
    keywords = [k.strip() for k in (li.text or "" for li in work.findall("dc:subject/rdf:Bag/rdf:li", _DC)) if k.strip()]
    parts = [] if not title or _BOILERPLATE.search(title) else [title]
    if len(desc.split()) >= 4 and desc.lower() != title.lower():
        parts.append(desc)
    if not parts and keywords:
        parts.append(", ".join(dict.fromkeys(keywords)))
    text = ". ".join(parts)
    return text or None


def _clipart() -> Iterator[Entry]:
    for svg in sorted(CLIPART.rglob("*.svg")):
        if svg.stat().st_size > MAX_SVG_BYTES:
            continue
        text = clipart_text(svg)
        if text:
            rel = svg.relative_to(CLIPART).with_suffix("")
            yield Entry(str(rel).replace("/", "_"), text, None, _svg(svg))


def _cldr() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for el in ET.parse(CLDR_EN).getroot().iter("annotation"):
        if el.get("type") != "tts" and el.text:
            out[el.get("cp", "")] = [k.strip() for k in el.text.split("|") if k.strip()]
    return out


def _emoji_png(chars: str) -> Callable[[], bytes]:
    def render() -> bytes:
        from PIL import Image, ImageDraw, ImageFont

        font = ImageFont.truetype(str(EMOJI_FONT), 109)  # the one size the bitmap font has
        canvas = Image.new("RGBA", (320, 160), (255, 255, 255, 0))
        ImageDraw.Draw(canvas).text((8, 8), chars, font=font, embedded_color=True)
        box = canvas.getbbox()
        if box is None:
            raise ValueError(f"the font draws nothing for {chars!r}")
        out = Image.new("RGB", (box[2] - box[0], box[3] - box[1]), "white")
        glyph = canvas.crop(box)
        out.paste(glyph, mask=glyph.getchannel("A"))
        buf = io.BytesIO()
        out.save(buf, format="PNG")
        return buf.getvalue()

    return render


def _emoji() -> Iterator[Entry]:
    """Skin-tone variants of one emoji share a group (the base emoji's name), so image->image finds them."""
    keywords = _cldr()
    line = re.compile(r"^([0-9A-F ]+?)\s*; fully-qualified\s*# (\S+) E[\d.]+ (.+)$")
    rows = [(m[1].split(), m[2], m[3].strip()) for raw in EMOJI_TEST.read_text(encoding="utf-8").splitlines()
            if (m := line.match(raw))]
    names = {chars: name for _codes, chars, name in rows}
    family: dict[str, int] = {}
    for _codes, chars, _name in rows:
        family[SKIN.sub("", chars)] = family.get(SKIN.sub("", chars), 0) + 1
    for codes, chars, name in rows:
        base = SKIN.sub("", chars)
        words = [k for k in keywords.get(chars.replace("\ufe0f", ""), keywords.get(base.replace("\ufe0f", ""), []))
                 if k.lower() != name.lower()]
        text = name + (f" ({', '.join(words)})" if words else "")
        group = names.get(base, name.split(":")[0]) if family[base] > 1 else None
        yield Entry("u" + "-".join(c.lower() for c in codes), text, group, _emoji_png(chars))


SOURCES: dict[str, DebianSource] = {s.name: s for s in (
    DebianSource("tuxstamps", ("tuxpaint-stamps-default",), TUX, _tux),
    DebianSource("openclipart", ("openclipart-svg",), CLIPART, _clipart),
    DebianSource("notoemoji", ("fonts-noto-color-emoji", "unicode-data", "unicode-cldr-core"), EMOJI_TEST, _emoji),
)}


def missing_packages(names: list[str]) -> list[str]:
    return [p for n in names for p in SOURCES[n].packages if not _installed(p)]


def _installed(package: str) -> bool:
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True, check=False)
    return r.returncode == 0 and "install ok installed" in r.stdout


def install(packages: list[str]) -> None:
    """apt-get update, then install: as root, or through sudo when there is one."""
    if not packages:
        return
    if shutil.which("apt-get") is None:
        raise ValueError(f"missing Debian packages {packages} and no apt-get here: install them by hand")
    import os

    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]):
        r = subprocess.run([*sudo, *cmd], check=False)
        if r.returncode != 0:
            raise ValueError(f"`{' '.join(cmd)}` failed (exit {r.returncode}); install {packages} by hand")


def _rank(key: str) -> str:
    return hashlib.blake2b(key.encode(), digest_size=8).hexdigest()


def write_source(name: str, out: Path, max_items: int | None = None,
                 on_item: Callable[[], None] = lambda: None, on_skip: Callable[[str], None] = lambda m: None) -> Path:
    """``out/<name>/captions.jsonl`` (+ rendered PNGs): ``rare import``'s input for one package. Returns its path."""
    src = SOURCES[name]
    if not src.marker.exists():
        raise ValueError(f"{src.marker}: not found; install {', '.join(src.packages)} (or pass --install)")
    entries = sorted(src.entries(), key=lambda e: _rank(e.key))
    folder = out / name
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for e in entries:
        if max_items is not None and len(rows) >= max_items:
            break
        target = images / f"{e.key}.png"
        if not target.exists():  # a rerun renders only what is missing
            try:
                data = e.image()
            except Exception as exc:  # noqa: BLE001 - a drawing the rasteriser cannot draw is skipped, named
                on_skip(f"{name}: {e.key}: cannot render ({type(exc).__name__}: {exc})")
                continue
            atomic_write(target, [data])  # a killed render leaves no truncated PNG for the rerun to keep
        rows.append({"image": f"images/{target.name}", "text": e.text, **({"group": e.group} if e.group else {})})
        on_item()
    captions = folder / "captions.jsonl"
    atomic_write_text(captions, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return captions

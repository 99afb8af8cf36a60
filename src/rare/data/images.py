"""Safe image loading: paths stay inside the data root, pixel counts are capped, every mode becomes RGB."""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO

from PIL import Image, ImageFile

# Decoding refuses anything larger; M-BEIR images are resized to a 256 px short side.
DEFAULT_MAX_PIXELS = 64_000_000


class ImageLoadError(ValueError):
    """An image that cannot be used, with the path and the cause in the message."""


def resolve_image(root: str | Path, rel: str) -> Path:
    """Resolve ``rel`` under ``root``; absolute paths, ``..`` and symlinks leading out are refused."""
    root = Path(root)
    if any(ord(c) < 32 for c in rel):
        raise ImageLoadError(f"{rel!r}: image path contains a control character")
    if not rel or os.path.isabs(rel) or rel.startswith(("/", "\\")):
        raise ImageLoadError(f"{rel!r}: image paths must be relative to the data root")
    if ".." in Path(rel).parts:
        raise ImageLoadError(f"{rel!r}: image path escapes the data root ('..')")
    path = root / rel
    real_root = root.resolve()
    real = path.resolve()
    if real != real_root and real_root not in real.parents:
        raise ImageLoadError(f"{rel!r}: image path resolves outside the data root (symlink to {real})")
    return path


class ImageRoot:
    """``resolve_image``'s rule, fast, for callers that resolve millions of paths under one root (the
    enhancement engine: 5.6M items on M-BEIR). Folders are resolved once, so a file only needs to not be
    a symlink; anything else takes the full check, which raises the precise error or allows a safe symlink."""

    def __init__(self, root: str | Path):
        self.root = root
        self._root_str = str(root)
        self._real_root = os.path.join(os.path.realpath(root), "")
        self._real_dirs: dict[str, str] = {}

    def resolve(self, rel: str) -> str:
        if rel and not os.path.isabs(rel) and ".." not in rel.split("/"):
            path = os.path.join(self._root_str, rel)
            folder = os.path.dirname(path)
            real = self._real_dirs.get(folder)
            if real is None:
                real = self._real_dirs[folder] = os.path.join(os.path.realpath(folder), "")
            if real.startswith(self._real_root) and not os.path.islink(path):
                return path
        return str(resolve_image(self.root, rel))


def to_rgb(img: Image.Image) -> Image.Image:
    """PIL's ``convert("RGB")``, as UniIR (its dataset opens every image with it before OpenAI clip's transform)
    and LamRA (qwen-vl-utils' ``fetch_image``) both run it: alpha is dropped, not composited, so a transparent
    pixel keeps the colour it stores (RGBA, LA; a palette's transparent index keeps its palette colour).
    Compositing on white would feed a model other pixels than the ones it was trained and scored on.
    16-bit grey is scaled to 8 bits first (PIL's conversion would clip it to white)."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        img = img.point(lambda v: v / 256).convert("L")
    return img.convert("RGB")


def load_image(root: str | Path, rel: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open, bound-check and fully decode one image; failures raise ImageLoadError naming the file."""
    path = resolve_image(root, rel)
    return open_image(path, max_pixels)


def open_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise ImageLoadError(f"{path}: image file not found")
    return to_rgb(decode(path, str(path), max_pixels))


def decode(source: str | Path | IO[bytes], name: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Fully decode an image file or stream as it is (no mode conversion), under the pixel cap; every failure
    is an ImageLoadError naming ``name``. ``rare import`` checks its inputs with this, so what it accepts
    is what ``open_image`` reads back. The cap is checked on the header, before any pixel is decoded
    (Pillow's own bomb check, a warning above its ``MAX_IMAGE_PIXELS``, is left as it is: changing warning
    filters here would race between the import's threads)."""
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        img = Image.open(source)
        w, h = img.size
        if w * h > max_pixels:
            raise ImageLoadError(f"{name}: {w}x{h} = {w * h} pixels exceeds the cap of {max_pixels}")
        img.load()
        return img
    except ImageLoadError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(f"{name}: decompression bomb refused ({exc})") from None
    except OSError as exc:  # truncated, corrupt, unidentified
        raise ImageLoadError(f"{name}: unreadable or corrupt image ({exc})") from None

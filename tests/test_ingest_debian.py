"""`rare debian-sources` writes images the towers can decode cheaply: at most RASTER_PX on the long side."""

from __future__ import annotations

import io

from PIL import Image

from rare.ingest import debian


def _png(size: tuple[int, int], mode: str = "RGBA") -> bytes:
    img = Image.new(mode, size, (10, 200, 30, 0) if mode == "RGBA" else (10, 200, 30))
    img.paste((250, 10, 10, 255) if mode == "RGBA" else (250, 10, 10), (0, 0, size[0] // 2, size[1] // 2))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_large_images_are_shrunk_to_the_raster_size_and_drawn_on_white() -> None:
    """The transparent half stores green: a loader dropping alpha (UniIR's rule) must see white there."""
    out = Image.open(io.BytesIO(debian._shrink(_png((520, 260)))))
    assert out.size == (debian.RASTER_PX, debian.RASTER_PX // 2) and out.mode == "RGB"
    assert out.getpixel((5, 5)) == (250, 10, 10) and out.getpixel((debian.RASTER_PX - 5, 90)) == (255, 255, 255)
    tall = Image.open(io.BytesIO(debian._shrink(_png((192, 1600), "RGB"))))  # a tall drawing drawn 192 px wide
    assert tall.size == (23, 192) and tall.mode == "RGB"


def test_small_opaque_images_keep_their_bytes_and_small_transparent_ones_are_flattened() -> None:
    data = _png((128, 100), "RGB")
    assert debian._shrink(data) is data
    flat = Image.open(io.BytesIO(debian._shrink(_png((128, 100)))))
    assert flat.size == (128, 100) and flat.mode == "RGB" and flat.getpixel((100, 90)) == (255, 255, 255)

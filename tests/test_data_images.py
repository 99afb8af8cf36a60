import os

import pytest
from PIL import Image

from rare.data.images import ImageLoadError, ImageRoot, load_image, resolve_image


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "root"
    (r / "mbeir_images").mkdir(parents=True)
    return r


def test_modes_become_rgb(root):
    Image.new("P", (4, 4), 3).save(root / "mbeir_images/p.png")
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red
    rgba.save(root / "mbeir_images/rgba.png")
    Image.new("CMYK", (4, 4), (0, 255, 255, 0)).save(root / "mbeir_images/cmyk.jpg")
    Image.new("L", (4, 4), 77).save(root / "mbeir_images/grey.png")
    Image.new("I;16", (4, 4), 256 * 200).save(root / "mbeir_images/deep.png")
    for name in ("p.png", "rgba.png", "cmyk.jpg", "grey.png", "deep.png"):
        img = load_image(root, f"mbeir_images/{name}")
        assert img.mode == "RGB" and img.size == (4, 4), name
    # alpha dropped as UniIR's and LamRA's convert("RGB") does: the transparent pixel keeps its stored red
    assert load_image(root, "mbeir_images/rgba.png").getpixel((0, 0)) == (255, 0, 0)
    assert load_image(root, "mbeir_images/grey.png").getpixel((1, 1)) == (77, 77, 77)
    r, g, b = load_image(root, "mbeir_images/cmyk.jpg").getpixel((0, 0))
    assert r > 200 and g < 60 and b < 60


@pytest.mark.parametrize("resolve", [resolve_image, lambda root, rel: ImageRoot(root).resolve(rel)],
                         ids=["resolve_image", "ImageRoot"])
def test_paths_must_stay_inside_root(root, tmp_path, resolve):
    outside = tmp_path / "secret.png"
    Image.new("RGB", (2, 2)).save(outside)
    with pytest.raises(ImageLoadError, match="relative to the data root"):
        resolve(root, str(outside))
    with pytest.raises(ImageLoadError, match=r"escapes the data root \('..'\)"):
        resolve(root, "mbeir_images/../../secret.png")
    os.symlink(outside, root / "mbeir_images/link.png")
    with pytest.raises(ImageLoadError, match="resolves outside the data root"):
        resolve(root, "mbeir_images/link.png")
    os.symlink(root / "mbeir_images", root / "inside")  # a folder link that stays inside the root is allowed
    Image.new("RGB", (2, 2)).save(root / "mbeir_images/ok.png")
    assert str(resolve(root, "inside/ok.png")) == str(root / "inside/ok.png")


def test_bomb_truncated_corrupt_missing(root):
    Image.new("RGB", (300, 300)).save(root / "mbeir_images/big.png")
    with pytest.raises(ImageLoadError, match="90000 pixels exceeds the cap of 1000"):
        load_image(root, "mbeir_images/big.png", max_pixels=1000)
    Image.effect_noise((64, 64), 50).convert("RGB").save(root / "mbeir_images/t.jpg", quality=95)
    data = (root / "mbeir_images/t.jpg").read_bytes()
    (root / "mbeir_images/t.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match=r"t.jpg: unreadable or corrupt image .*truncated"):
        load_image(root, "mbeir_images/t.jpg")
    (root / "mbeir_images/junk.png").write_bytes(b"not an image at all")
    with pytest.raises(ImageLoadError, match="junk.png: unreadable or corrupt image"):
        load_image(root, "mbeir_images/junk.png")
    with pytest.raises(ImageLoadError, match="nope.png: image file not found"):
        load_image(root, "mbeir_images/nope.png")

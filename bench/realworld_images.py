"""Per-image cost of the debian_clipart profile's images in training and evaluation: load (decode, RGB) plus
the towers' preprocessing, on two imported roots in the same run (e.g. before and after `rare debian-sources`
shrank its images to 192 px), alternating rounds; prints ms per image and the ratio to the first root.

    python -m bench.realworld_images ROOT_A ROOT_B [--rounds 3] [--image-size 64]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rare.data.images import load_image
from rare.model.preprocess import preprocess_image

SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif")


def per_image_ms(root: Path, image_size: int) -> float:
    rels = sorted(str(p.relative_to(root)) for p in (root / "mbeir_images").rglob("*") if p.suffix in SUFFIXES)
    start = time.perf_counter()
    for rel in rels:
        preprocess_image(load_image(root, rel), image_size, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    return (time.perf_counter() - start) / len(rels) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("roots", nargs=2, type=Path)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--image-size", type=int, default=64)
    args = ap.parse_args()
    best = {r: float("inf") for r in args.roots}
    for _ in range(args.rounds):
        for root in args.roots:
            best[root] = min(best[root], per_image_ms(root, args.image_size))
    ref = best[args.roots[0]]
    for root, ms in best.items():
        print(f"{root}: {ms:.2f} ms per image (best of {args.rounds}), ratio {ms / ref:.2f}")


if __name__ == "__main__":
    main()

"""The embedded benchmark: an offline, M-BEIR-layout dataset whose images carry silent evidence.

Five fictional datasets (glyphcaps, factwiki, twinpix, emblemkb, tweakset) cover tasks 0-4 and
6-8. Every image's exact scene annotation goes into ``src_content``; only the offline stand-in
for a VLM reads it. See docs/benchmark.md.
"""

from rare.benchmark.generate import generate

__all__ = ["generate"]

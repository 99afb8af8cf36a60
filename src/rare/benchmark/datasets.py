"""The embedded benchmark's datasets, one ``DatasetSpec`` per module, in generation order (each has its
own RNG stream; the shared ``Namer`` is drawn from in this order)."""

from __future__ import annotations

from rare.benchmark import emblemkb, factwiki, glyphcaps, tweakset, twinpix
from rare.benchmark.spec import DatasetSpec

EMBEDDED: tuple[DatasetSpec, ...] = (glyphcaps.SPEC, factwiki.SPEC, twinpix.SPEC, emblemkb.SPEC, tweakset.SPEC)
EMBEDDED_BY_NAME: dict[str, DatasetSpec] = {s.dataset.name: s for s in EMBEDDED}

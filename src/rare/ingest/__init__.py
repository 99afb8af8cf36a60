"""``rare import``: turn an image-text collection a user already has into an M-BEIR root.

One module per input format (``captions``, ``tables``, ``folder``, ``webdataset``), each a reader that yields
rows or rejections; ``formats`` is the table that picks one for a path; ``build`` checks the images,
drops duplicates, splits by content hash and writes the root through ``rare.data.layout``.
"""

from rare.ingest.build import ImportOptions, ImportResult, Source, import_root
from rare.ingest.formats import FORMATS, detect_format

__all__ = ["FORMATS", "ImportOptions", "ImportResult", "Source", "detect_format", "import_root"]

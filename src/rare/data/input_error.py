"""One error type for bad input, so every message names the file, the line and the cause."""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    def __init__(self, path: str | Path, line: int | None, cause: str):
        self.path, self.line, self.cause = str(path), line, cause
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {cause}")

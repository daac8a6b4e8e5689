"""The training log: rows of numbers kept in memory and rewritten as one CSV file atomically."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

from multibeta.utils.io import write_text


class CsvLog:
    """Rows of a training log (``step`` first), written as CSV by :meth:`write`.

    Each :meth:`write` rewrites the whole file through a temporary file, so the file on disk is
    always complete; the rows travel in the resumable state (:attr:`rows`), so a resumed run
    writes the same file as an uninterrupted one. Columns are the union of the rows' keys in
    order of first appearance (a row without a column leaves it empty); floats are written
    with 6 significant digits, other values as they are.

    Args:
        path: the CSV file; None keeps the rows without writing a file.
        rows: rows to start from (those of a resumed state).
    """

    def __init__(self, path: str | os.PathLike | None, rows: list[dict[str, Any]] | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.rows: list[dict[str, Any]] = list(rows or [])

    def append(self, row: dict[str, Any]) -> None:
        """Add one row (it is written at the next :meth:`write`)."""
        self.rows.append(dict(row))

    @property
    def last(self) -> dict[str, Any]:
        """The last row ({} when there is none)."""
        return self.rows[-1] if self.rows else {}

    def text(self) -> str:
        """The CSV text of all rows (``\\n`` line ends)."""
        columns: list[str] = []
        for row in self.rows:
            columns += [k for k in row if k not in columns]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, restval="", lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        return buf.getvalue()

    def write(self) -> None:
        """Rewrite the file with all rows, atomically (nothing when ``path`` is None)."""
        if self.path is not None:
            write_text(self.text(), self.path)

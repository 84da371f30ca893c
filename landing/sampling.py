"""Row estimates of line-based files (JSONL, CSV) from a sample of their bytes.

Used to balance chunks across workers and for the progress ETA; never to decide what
is read, so an estimate may be off but must be cheap.
"""

from __future__ import annotations

from landing.reading import open_input

_SAMPLE_BYTES = 256 << 10
_GZIP_RATIO = 4.0  # assumed when estimating rows of a gzipped file from its size


def line_rows(path: str, size: int, gzipped: bool) -> int:
    """Estimated lines of the file: its (uncompressed) size over the average bytes per
    line of its first 256 KiB."""
    try:
        with open_input(path, gzipped) as fh:
            sample = fh.read(_SAMPLE_BYTES)
    except Exception:  # noqa: BLE001 - unreadable files are reported by the reader
        return max(1, size // 1000)
    per_row = max(1.0, len(sample) / max(1, sample.count(b"\n")))
    return max(1, int(size * (_GZIP_RATIO if gzipped else 1.0) / per_row))

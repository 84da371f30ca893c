"""Row estimates of line-based files (JSONL, CSV) from bounded samples of their bytes.

Used to balance chunks across workers and for the progress ETA; never to decide what
is read. An uncompressed file is sampled in windows spread over it; a gzipped one by
decompressing the start of it with a cap on the output, which measures its compression
ratio and never holds more than the cap, whatever the file expands to.
"""

from __future__ import annotations

import zlib

from landing.reading import open_input
from landing.splitters import Extent

_WINDOW = 64 << 10
_WINDOWS = 8
_GZIP_IN = 1 << 20  # compressed bytes sampled
_GZIP_OUT = 8 << 20  # most decompressed bytes looked at


def line_extent(path: str, size: int, gzipped: bool) -> Extent:
    """Estimated lines of the file: its (uncompressed) size over the sampled bytes per
    line."""
    return Extent(_lines(path, size, gzipped))


def csv_extent(path: str, size: int, gzipped: bool) -> Extent:
    """Estimated data rows of a CSV file: its lines but the header."""
    return Extent(max(1, _lines(path, size, gzipped) - 1))


def _lines(path: str, size: int, gzipped: bool) -> int:
    try:
        raw, newlines, ratio = _gzip_sample(path) if gzipped else _spread_sample(path, size)
    except Exception:  # noqa: BLE001 - unreadable files are reported by the reader
        return max(1, size // 1000)
    per_row = max(1.0, raw / max(1, newlines))
    return max(1, round(size * ratio / per_row))


def _spread_sample(path: str, size: int) -> tuple[int, int, float]:
    """(bytes, newlines, 1.0) of windows spread evenly over the file."""
    seen = newlines = 0
    with open_input(path) as fh:
        if size <= _WINDOW * _WINDOWS:
            block = fh.read(_WINDOW * _WINDOWS)  # never more, whatever the size said
            return len(block), block.count(b"\n") + (not block.endswith(b"\n")), 1.0
        for k in range(_WINDOWS):
            fh.seek(k * (size - _WINDOW) // (_WINDOWS - 1))
            block = fh.read(_WINDOW)
            seen, newlines = seen + len(block), newlines + block.count(b"\n")
    return seen, newlines, 1.0


def _gzip_sample(path: str) -> tuple[int, int, float]:
    """(decompressed bytes, newlines, compression ratio) of the start of a gzip file."""
    inflate = zlib.decompressobj(wbits=31)
    used = out = newlines = 0
    with open_input(path) as fh:
        while used < _GZIP_IN and out < _GZIP_OUT and not inflate.eof:
            data = fh.read(64 << 10)
            if not data:
                break
            while data and out < _GZIP_OUT and not inflate.eof:
                block = inflate.decompress(data, 1 << 20)
                used += len(data) - len(inflate.unconsumed_tail)
                data = inflate.unconsumed_tail
                out, newlines = out + len(block), newlines + block.count(b"\n")
    if used == 0:
        return 1, 0, 1.0
    return out, newlines, out / used

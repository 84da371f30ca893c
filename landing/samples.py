"""Synthetic support-ticket documents: the bundled sample tranches, test data, bench data.

Deterministic for a seed. Each label has its own vocabulary mixed into common words,
so a TF-IDF model learns it well but not perfectly. ``write_tranche`` writes one
``dt=YYYY-MM-DD`` folder in any of the four input formats and can inject known bad
records (malformed JSON, missing or non-string fields, empty and over-long texts,
undecodable bytes) so tests and the demo exercise the dead-letter path.

``python -m landing.samples --root var`` prepares what ``make run`` scores.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import os
import random
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

LABELS = ("billing", "shipping", "technical", "account", "returns")
TOPIC_SHARE = 0.04  # share of label-specific words: low enough that short texts are ambiguous
_TOPIC = {
    "billing": "invoice charge refund payment card billed price subscription fee receipt tax",
    "shipping": "delivery parcel courier tracking shipped arrived late address package warehouse",
    "technical": "error crash bug login app update install screen broken timeout server",
    "account": "password username profile email settings verify locked signup delete privacy",
    "returns": "return exchange damaged wrong size label unused condition replacement policy",
}
_COMMON = (
    "the a i my you we please help need order still not when can this it with for today "
    "thanks again hello support team customer week since yesterday service issue problem"
).split()


def make_docs(n: int, seed: int = 0, min_chars: int = 100, max_chars: int = 600,
              prefix: str = "doc") -> Iterator[dict[str, str]]:
    rng = random.Random(seed)
    topic = {k: v.split() for k, v in _TOPIC.items()}
    for i in range(n):
        label = LABELS[i % len(LABELS)] if rng.random() < 0.9 else rng.choice(LABELS)
        target = rng.randint(min_chars, max_chars)
        words: list[str] = []
        size = 0
        while size < target:
            w = rng.choice(topic[label]) if rng.random() < TOPIC_SHARE else rng.choice(_COMMON)
            words.append(w)
            size += len(w) + 1
        yield {"id": f"{prefix}-{i:07d}", "text": " ".join(words)[:target], "label": label,
               "channel": rng.choice(("email", "chat", "phone"))}


BAD_JSONL_LINES = [
    b'{"id": "bad-json", "text": "unterminated',          # malformed JSON
    b'{"text": "no id here at all"}',                     # missing id
    b'{"id": 12345, "text": "numeric id"}',               # non-string id
    b'{"id": "bad-empty", "text": "   "}',                # empty text
    b'{"id": "bad-bytes", "text": "caf\xe9 \xff"}',       # undecodable bytes
    b'["not", "an", "object"]',                           # not an object
]


def write_tranche(root: str, day: str, docs: list[dict[str, str]], fmt: str,
                  name: str = "part-0", inject_bad: bool = False) -> str:
    """Write ``docs`` into ``<root>/dt=<day>/<name>.<fmt>``; returns the path."""
    folder = os.path.join(root, f"dt={day}")
    os.makedirs(folder, exist_ok=True)
    ext = {"jsonl": "jsonl", "jsonl.gz": "jsonl.gz", "parquet": "parquet", "csv": "csv"}[fmt]
    path = os.path.join(folder, f"{name}.{ext}")
    if fmt in ("jsonl", "jsonl.gz"):
        buf = io.BytesIO()
        for i, d in enumerate(docs):
            buf.write(json.dumps(d).encode() + b"\n")
            if inject_bad and i == len(docs) // 2:
                buf.write(b"\n".join(BAD_JSONL_LINES) + b"\n")
        data = buf.getvalue()
        with open(path, "wb") as fh:
            fh.write(gzip.compress(data) if fmt == "jsonl.gz" else data)
    elif fmt == "csv":
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=["id", "text", "label", "channel"])
        writer.writeheader()
        writer.writerows(docs)
        data = text.getvalue().encode()
        if inject_bad:
            data += b'bad-fields,only two\n'                 # wrong number of fields
            data += b'bad-csv-bytes,"caf\xe9",billing,email\n'  # undecodable bytes
            data += b'bad-csv-empty,,billing,email\n'          # empty text
        with open(path, "wb") as fh:
            fh.write(data)
    else:
        rows: list[dict[str, str | None]] = [dict(d) for d in docs]
        if inject_bad:
            rows = rows + [{"id": "bad-pq-none", "text": None,  # type: ignore[dict-item]
                            "label": "billing", "channel": "chat"}]
        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


BAD_COUNTS = {"jsonl": 6, "jsonl.gz": 6, "csv": 3, "parquet": 1}


def prepare_demo(root: str) -> None:
    """Sample tranches (all four formats, some bad records) and training documents."""
    landing = os.path.join(root, "landing")
    train_dir = os.path.join(root, "train")
    if not os.path.exists(landing):
        days = ["2026-01-01", "2026-01-02", "2026-01-03"]
        for k, day in enumerate(days):
            docs = list(make_docs(3000, seed=100 + k, prefix=f"{day}"))
            for j, fmt in enumerate(("jsonl", "jsonl.gz", "parquet", "csv")):
                write_tranche(landing, day, docs[j * 750:(j + 1) * 750], fmt,
                              name=f"part-{j}", inject_bad=True)
        print(f"sample tranches written under {landing}: {', '.join(days)}")
    if not os.path.exists(train_dir):
        os.makedirs(train_dir)
        with open(os.path.join(train_dir, "labelled.jsonl"), "w") as fh:
            for d in make_docs(5000, seed=7, prefix="train"):
                fh.write(json.dumps(d) + "\n")
        print(f"training documents written under {train_dir}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="prepare the bundled sample tranches")
    ap.add_argument("--root", default="var")
    prepare_demo(ap.parse_args().root)

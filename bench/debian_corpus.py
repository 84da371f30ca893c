"""A labelled text corpus from Debian's package lists: short description -> section.

``build_corpus`` reads every ``/var/lib/apt/lists/*_Packages.lz4`` (``apt-get update``
fetches them), keeps one record per package (its one-line ``Description`` as text, the
last component of its ``Section`` as label, e.g. ``contrib/games`` -> ``games``), drops
sections with fewer than ``min_per_section`` packages and, with ``n``, keeps a stratified
random sample of ``n`` records. ``bench/train_bench.py`` trains on it.

    python bench/debian_corpus.py /tmp/debian.jsonl --n 38206
"""

from __future__ import annotations

import argparse
import glob
import json
import subprocess
from collections import Counter

LISTS = "/var/lib/apt/lists/*_Packages.lz4"


def _stanzas(path: str) -> list[dict[str, str]]:
    text = subprocess.run(["/usr/lib/apt/apt-helper", "cat-file", path], check=True,
                          capture_output=True, text=True).stdout
    out = []
    for stanza in text.split("\n\n"):
        fields = {}
        for line in stanza.splitlines():
            if line[:1] not in (" ", "\t") and ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        out.append(fields)
    return out


def build_corpus(n: int | None = None, min_per_section: int = 20, seed: int = 0
                 ) -> list[dict[str, str]]:
    """Records ``{"id", "text", "label"}`` of the package lists, sorted by package."""
    paths = sorted(glob.glob(LISTS))
    if not paths:
        raise SystemExit(f"no {LISTS}: run `apt-get update` first")
    packages: dict[str, tuple[str, str]] = {}
    for path in paths:
        for fields in _stanzas(path):
            if fields.get("Package") and fields.get("Description") and fields.get("Section"):
                packages[fields["Package"]] = (fields["Description"],
                                               fields["Section"].split("/")[-1])
    sizes = Counter(section for _, section in packages.values())
    records = [{"id": name, "text": text, "label": section}
               for name, (text, section) in sorted(packages.items())
               if sizes[section] >= min_per_section]
    if n is not None and n < len(records):
        from sklearn.model_selection import train_test_split

        records, _ = train_test_split(records, train_size=n, random_state=seed,
                                      stratify=[r["label"] for r in records])
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", help="JSONL file to write")
    parser.add_argument("--n", type=int, default=None, help="records to keep (all)")
    parser.add_argument("--min-per-section", type=int, default=20)
    args = parser.parse_args()
    records = build_corpus(args.n, args.min_per_section)
    with open(args.output, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in records)
    print(f"{len(records)} records, {len({r['label'] for r in records})} sections "
          f"-> {args.output}")


if __name__ == "__main__":
    main()

"""Derive ``genlab/data/emoji_groups.csv`` from Unicode's ``emoji-test.txt``.

Usage::

    python scripts/make_emoji_csv.py /usr/share/unicode/emoji/emoji-test.txt > genlab/data/emoji_groups.csv

The checked-in CSV was made from emoji-test.txt Version 15.0 (2022-08-12), as shipped by
Debian bookworm's ``unicode-data`` package (15.0.0-1). Emoji added in Unicode 15.1 and later
are therefore absent; rerun this script on a newer emoji-test.txt to pick them up.

Output columns: ``codepoints,group,subgroup``. ``codepoints`` is the hex code point sequence
in upper case joined by ``-`` (``1F600``, ``1F468-200D-1F469-200D-1F467``). Every status line
is kept (fully-qualified, minimally-qualified, unqualified, component) because OpenMoji
names its files by sequences that may omit FE0F. Rows keep emoji-test.txt order, so the
order in which groups and subgroups first appear is the file's own (CLDR) order.
"""

from __future__ import annotations

import csv
import sys


def parse(lines):
    """Yield ``(codepoints, group, subgroup)`` for every emoji line of emoji-test.txt."""
    group = subgroup = None
    for raw in lines:
        line = raw.strip()
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
            continue
        if line.startswith("# subgroup:"):
            subgroup = line.split(":", 1)[1].strip()
            continue
        if not line or line.startswith("#"):
            continue
        fields = line.split("#", 1)[0]
        if ";" not in fields:
            continue
        seq = fields.split(";", 1)[0].split()
        if not seq or group is None or subgroup is None:
            raise ValueError(f"emoji line outside a group/subgroup: {raw!r}")
        yield "-".join(cp.upper() for cp in seq), group, subgroup


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} PATH/emoji-test.txt > genlab/data/emoji_groups.csv", file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        rows = list(parse(f))
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["codepoints", "group", "subgroup"])
    seen = set()
    for row in rows:
        if row[0] in seen:  # never happens in published files; keep the first just in case
            continue
        seen.add(row[0])
        writer.writerow(row)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""Say what moved between two requirements locks: `python scripts/lockdiff.py OLD NEW`.

One line per package whose pinned version differs (`name  old -> new`), added or removed;
a closing count. Markers are kept apart, so a package pinned per Python version (numpy)
compares each pin with its own kind.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*(?:\\|$)")


def pins(path: str) -> dict[str, str]:
    """`name [; marker]` -> version for every pin of a lock."""
    out = {}
    for line in Path(path).read_text().splitlines():
        m = PIN.match(line)
        if m:
            name = m[1].lower().replace("_", "-")
            out[f"{name} ; {m[3]}" if m[3] else name] = m[2]
    return out


def main(argv: list[str]) -> int:
    """Print what moved from lock argv[0] to lock argv[1]."""
    old, new = pins(argv[0]), pins(argv[1])
    moved = 0
    for name in sorted(old.keys() | new.keys()):
        before, after = old.get(name, "(absent)"), new.get(name, "(absent)")
        if before != after:
            moved += 1
            print(f"{name:40} {before} -> {after}")
    print(f"{moved} of {len(new)} pins would move" if moved else
          f"up to date: all {len(new)} pins are the newest allowed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

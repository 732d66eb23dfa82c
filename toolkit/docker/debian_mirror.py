#!/usr/bin/env python3
"""Print the Debian mirror this machine's apt uses for SUITE's main archive (for debootstrap).

    scripts/debian_mirror.py bookworm [--root /]

Reads /etc/apt/sources.list and /etc/apt/sources.list.d/*.list (one-line format) and
/etc/apt/sources.list.d/*.sources (deb822), in apt's order, and prints the first `deb` source
whose suites include SUITE and whose components include `main`, so `make base` uses the same
mirror as apt does (a company mirror, a snapshot). Exit 1 with one line when there is none.
Standard library only: it runs before any venv exists.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from pathlib import Path

__all__ = ["main", "mirror_for", "sources"]

# Schemes debootstrap can fetch from; others (cdrom:, mirror+file:, tor+http:) are skipped.
_SCHEMES = ("http://", "https://", "file:/")


def sources(root: Path) -> Iterator[tuple[set[str], list[str], set[str], set[str]]]:
    """``(types, uris, suites, components)`` of every enabled source, in apt's order."""
    etc = root / "etc" / "apt"
    files = [etc / "sources.list"] if (etc / "sources.list").is_file() else []
    files += sorted(p for p in (etc / "sources.list.d").glob("*") if p.suffix in (".list", ".sources"))
    for path in files:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue  # unreadable: apt would complain; we look further
        yield from _deb822(text) if path.suffix == ".sources" else _one_line(text)


def mirror_for(suite: str, root: Path = Path("/")) -> str | None:
    """The first `deb` URI serving ``suite``'s main component, without a trailing slash."""
    for types, uris, suites, components in sources(root):
        if "deb" in types and suite in suites and "main" in components:
            for uri in uris:
                if uri.startswith(_SCHEMES):
                    return uri.rstrip("/")
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite")
    parser.add_argument("--root", type=Path, default=Path("/"), help="filesystem root holding etc/apt")
    args = parser.parse_args(argv)
    mirror = mirror_for(args.suite, args.root)
    if mirror is None:
        where = args.root / "etc" / "apt"
        print(f"no `deb` source for {args.suite} main in {where}; set DEBIAN_MIRROR", file=sys.stderr)
        return 1
    print(mirror)
    return 0


def _one_line(text: str) -> Iterator[tuple[set[str], list[str], set[str], set[str]]]:
    # deb [ option=value ... ] uri suite [component ...]
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        line = re.sub(r"\[[^\]]*\]", " ", line)  # options (arch=, signed-by=) are not needed here
        fields = line.split()
        if len(fields) >= 3:
            yield {fields[0]}, [fields[1]], {fields[2]}, set(fields[3:])


def _deb822(text: str) -> Iterator[tuple[set[str], list[str], set[str], set[str]]]:
    # Stanzas separated by blank lines; `Key: value` with continuation lines; `#` comments.
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = None
        for raw in stanza.splitlines():
            if raw.startswith("#"):
                continue
            if raw[:1].isspace() and key is not None:
                fields[key] += " " + raw.strip()
            elif ":" in raw:
                key, _, value = raw.partition(":")
                key = key.strip().lower()
                fields[key] = value.strip()
        if fields.get("enabled", "yes").lower() == "no":
            continue
        yield (
            set(fields.get("types", "").split()),
            fields.get("uris", "").split(),
            set(fields.get("suites", "").split()),
            set(fields.get("components", "").split()),
        )


if __name__ == "__main__":
    sys.exit(main())

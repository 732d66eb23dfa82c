"""A callable an attacker finds already installed and harmless-looking: it writes a file.

The signing tests' attacker pickles a call to it and lists it in the rewritten card (it is on
no deny-list, and the card's author decides what the card lists), so only a signature stops it.
"""

from __future__ import annotations


def touch(path: str) -> None:
    with open(path, "w"):
        pass

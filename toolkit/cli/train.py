"""``toolkit train`` and ``toolkit predict`` (placeholder until training lands)."""

from __future__ import annotations

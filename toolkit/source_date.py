"""``SOURCE_DATE_EPOCH``: the reproducible-builds timestamp a card's ``created_at`` honours.

One rule for the CLI's start-up check, the trainer and ``save``. It imports nothing heavy:
the CLI checks it before numpy is imported, because numpy's own import (``numpy.f2py``)
runs ``int(SOURCE_DATE_EPOCH)`` and crashes with a raw ValueError on a bad value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from toolkit import env
from toolkit.errors import UsageError

__all__ = ["MAX_EPOCH", "source_date_epoch"]

# 9999-12-31T23:59:59Z: the last second an ISO-8601 timestamp with a four-digit year can show.
MAX_EPOCH = 253_402_300_799


def source_date_epoch(environ: Mapping[str, str] | None = None) -> int | None:
    """The value of ``SOURCE_DATE_EPOCH`` as seconds, or None when it is not set.

    Raises:
        UsageError: set but not a whole number of seconds from 0 to ``MAX_EPOCH``
            (an empty value counts as set: numpy's import would crash on it too).
    """
    raw = (os.environ if environ is None else environ).get(env.SOURCE_DATE_EPOCH)
    if raw is None:
        return None
    digits = raw[1:] if raw.startswith("-") else raw
    # ASCII digits only: int() would also take " 12", "+12", "1_2" and other digits.
    if not (digits.isascii() and digits.isdigit()):
        shown = raw if len(raw) <= 40 else raw[:40] + "..."
        raise UsageError(f"SOURCE_DATE_EPOCH={shown!r} is not a Unix timestamp (whole seconds since 1970, 0 or more)")
    if raw.startswith("-") or len(raw) > 12 or int(raw) > MAX_EPOCH:
        raise UsageError(f"SOURCE_DATE_EPOCH={raw[:40]} is out of range (0 to {MAX_EPOCH}, the end of year 9999)")
    return int(raw)

"""Recognise a full (or failing) disk in the errors SQLite and the operating system raise.

The node's API answers such a failure with 507 ``insufficient_storage`` and a message that
names the cause, instead of a bare 500: the release was not made and nothing was charged
(the reservation is given back), so the operator only has to free space and ask again. The
``dpn`` command line prints the same messages (``owner="the"``) and exits 1.
"""

from __future__ import annotations

import errno

__all__ = ["storage_failure"]

#: How SQLite and the operating system say a write found no space.
_DISK_FULL = ("database or disk is full", "no space left on device")


def storage_failure(exc: BaseException, *, owner: str = "the node's") -> str | None:
    """What to tell the caller when ``exc`` says the disk is full or failing; else ``None``.

    ``owner`` starts the message: ``"the node's database could not be written: ..."``.
    """
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{owner} disk is full: {exc.strerror or 'no space left on device'}{where}"
    text = str(getattr(exc, "orig", exc)).lower()
    if any(words in text for words in _DISK_FULL):
        return f"{owner} database could not be written: the disk is full"
    if "disk i/o error" in text:
        return (f"{owner} database could not be read or written (disk I/O error): "
                "the disk may be full")
    return None

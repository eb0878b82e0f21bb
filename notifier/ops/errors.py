"""An error in words for a person."""

from __future__ import annotations

import os


def described(exc: BaseException) -> str:
    """Its kind, its message and its root cause (``ConnectError: All connection
    attempts failed ([Errno 111] Connection refused)``), never a bare class name."""
    said = str(exc).strip()
    root = exc
    while (deeper := root.__cause__ or root.__context__) is not None and deeper is not root:
        root = deeper
    cause = str(root).strip() if root is not exc else ""
    if isinstance(root, OSError) and root.errno is not None:  # "Connection refused"
        cause = os.strerror(root.errno)
    if cause and cause not in said:
        said = f"{said} ({cause})" if said else cause
    return f"{type(exc).__name__}: {said}" if said else type(exc).__name__

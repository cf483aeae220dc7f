"""The guest runner: real static x86-64 Linux programs run inside stubs.

:func:`run_program` loads a static (or static-PIE) program into a fresh stub and
serves every syscall it makes from Python, until it exits.
"""

from __future__ import annotations

from .errors import GuestError

__all__ = ["GuestError"]

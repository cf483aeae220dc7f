"""The guest runner: real x86-64 Linux programs run inside stubs.

:func:`run_program` loads a program (static, static-PIE or dynamically linked) into a fresh stub and
serves every syscall it makes from Python until it exits::

    async with Controller() as ctl:
        status = await run_program(ctl, "/bin/busybox", ["busybox", "echo", "hi"], os.environ)

The layers, bottom up: :mod:`.elf` (reading and checking programs),
:mod:`.memory` (the guest address space and zero-copy guest memory access),
:mod:`.loader` and :mod:`.stack` (putting a program and its initial stack in),
:mod:`.files` (descriptors, open files, paths), :mod:`.signals`,
:mod:`.process` (one guest process and its serve loop), :mod:`.syscalls` (the
handlers), :mod:`.strace` and :mod:`.table` (``--strace`` output), and
:mod:`.runner`.
"""

from __future__ import annotations

from .errors import GuestError
from .runner import run_program

__all__ = ["GuestError", "run_program"]

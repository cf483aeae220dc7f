"""The stub ABI as Python sees it: every value comes from ``stub_src/stub_abi.h``.

Nothing here restates a number; ``_native`` is the cffi module compiled
against the header, so sizes, offsets and constants are the C compiler's.
"""

from __future__ import annotations

import enum
import os
from typing import TYPE_CHECKING

from aioumm._native import ffi, lib

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "BATCH_CAPACITY",
    "BOOTSTRAP_FILE",
    "CODE_IMAGE_FILE",
    "MAX_FDS",
    "PAGE_SIZE",
    "STUB_END",
    "STUB_START",
    "TASK_TOP",
    "Command",
    "Handoff",
    "Op",
    "StubExit",
    "bootstrap_path",
    "code_image_path",
    "ffi",
    "lib",
]

PAGE_SIZE: int = lib.STUB_PAGE_SIZE
STUB_START: int = lib.STUB_AREA_START
STUB_END: int = lib.STUB_AREA_END
TASK_TOP: int = lib.STUB_TASK_TOP
CODE_ADDR: int = lib.STUB_CODE_ADDR
CODE_SIZE: int = lib.STUB_CODE_SIZE
DATA_ADDR: int = lib.STUB_DATA_ADDR
DATA_SIZE: int = lib.STUB_DATA_SIZE
ALTSTACK_START: int = lib.STUB_DATA_ADDR + lib.STUB_ALTSTACK_OFFSET
BATCH_CAPACITY: int = lib.STUB_BATCH_CAPACITY
MAX_FDS: int = lib.STUB_MAX_FDS
SLOT_ANON: int = lib.STUB_SLOT_ANON
BATCH_EFDS: int = lib.STUB_BATCH_EFDS


class Handoff(enum.IntEnum):
    """Owner of the stub data page (the futex word)."""

    CHILD = lib.STUB_HANDOFF_CHILD
    CONTROLLER = lib.STUB_HANDOFF_CONTROLLER
    #: The controller's too, and the stub sleeps: a hand-back wakes it (``aioumm_load_handoff``
    #: reads it as CONTROLLER).
    SLEEPING = lib.STUB_HANDOFF_SLEEPING


class Command(enum.IntEnum):
    """What the controller asks for when it hands the page back."""

    RESUME = lib.STUB_CMD_RESUME
    BATCH = lib.STUB_CMD_BATCH


class Op(enum.IntEnum):
    """Kinds of batch record."""

    MMAP = lib.STUB_OP_MMAP
    MUNMAP = lib.STUB_OP_MUNMAP
    MPROTECT = lib.STUB_OP_MPROTECT


class StubExit(enum.IntEnum):
    """Exit codes of a stub that gave up, each with what it means."""

    PDEATHSIG = lib.STUB_EXIT_PDEATHSIG
    NO_NEW_PRIVS = lib.STUB_EXIT_NO_NEW_PRIVS
    INIT_READ = lib.STUB_EXIT_INIT_READ
    INIT_MAGIC = lib.STUB_EXIT_INIT_MAGIC
    INIT_VERSION = lib.STUB_EXIT_INIT_VERSION
    MAP_CODE = lib.STUB_EXIT_MAP_CODE
    CODE_IMAGE = lib.STUB_EXIT_CODE_IMAGE
    MAP_DATA = lib.STUB_EXIT_MAP_DATA
    SEAL = lib.STUB_EXIT_SEAL
    CLOSE_RANGE = lib.STUB_EXIT_CLOSE_RANGE
    NONBLOCK = lib.STUB_EXIT_NONBLOCK
    ALTSTACK_SIZE = lib.STUB_EXIT_ALTSTACK_SIZE
    SIGALTSTACK = lib.STUB_EXIT_SIGALTSTACK
    SIGACTION_SEGV = lib.STUB_EXIT_SIGACTION_SEGV
    SIGACTION_SYS = lib.STUB_EXIT_SIGACTION_SYS
    SIGACTION_ALRM = lib.STUB_EXIT_SIGACTION_ALRM
    SIGACTION_TRAP = lib.STUB_EXIT_SIGACTION_TRAP
    SIGACTION_ILL = lib.STUB_EXIT_SIGACTION_ILL
    SIGACTION_FPE = lib.STUB_EXIT_SIGACTION_FPE
    SIGMASK = lib.STUB_EXIT_SIGMASK
    FILTER_SIZE = lib.STUB_EXIT_FILTER_SIZE
    SECCOMP = lib.STUB_EXIT_SECCOMP
    NOT_TRAPPED = lib.STUB_EXIT_NOT_TRAPPED
    HANDLER_WAIT = lib.STUB_EXIT_HANDLER_WAIT
    HANDLER_NOTIFY = lib.STUB_EXIT_HANDLER_NOTIFY
    HANDLER_COMMAND = lib.STUB_EXIT_HANDLER_COMMAND
    HANDLER_FSBASE = lib.STUB_EXIT_HANDLER_FSBASE

    @property
    def explanation(self) -> str:
        """A sentence saying what failed."""
        return _EXPLANATIONS[self]


_EXPLANATIONS = {
    StubExit.PDEATHSIG: "could not arrange to die with the controller (prctl PR_SET_PDEATHSIG), "
    "or the controller was already gone",
    StubExit.NO_NEW_PRIVS: "prctl(PR_SET_NO_NEW_PRIVS) failed: seccomp filters need it",
    StubExit.INIT_READ: "the init message did not arrive whole on fd 0 (controller gone or short write)",
    StubExit.INIT_MAGIC: "the init message has the wrong magic number",
    StubExit.INIT_VERSION: "the init message is for another ABI version: rebuild the stub and the cffi module",
    StubExit.MAP_CODE: "mapping the stub code at its fixed address failed "
    "(something else is mapped there, or the code memfd is bad)",
    StubExit.CODE_IMAGE: "the stub code image is invalid (bad header, ABI version or site table): rebuild it",
    StubExit.MAP_DATA: "mapping the stub data pages at their fixed address failed",
    StubExit.SEAL: "mseal() of the stub pages failed (kernel older than 6.10?)",
    StubExit.CLOSE_RANGE: "close_range() failed (kernel older than 5.9?)",
    StubExit.NONBLOCK: "making the FD channel and the eventfd non-blocking failed",
    StubExit.ALTSTACK_SIZE: "the kernel's minimum signal stack size (AT_MINSIGSTKSZ) plus headroom "
    "does not fit the alt stack in the data pages",
    StubExit.SIGALTSTACK: "sigaltstack() failed",
    StubExit.SIGACTION_SEGV: "installing the SIGSEGV handler failed",
    StubExit.SIGACTION_SYS: "installing the SIGSYS handler failed",
    StubExit.SIGACTION_ALRM: "installing the SIGALRM handler failed",
    StubExit.SIGACTION_TRAP: "installing the SIGTRAP handler failed",
    StubExit.SIGACTION_ILL: "installing the SIGILL handler failed",
    StubExit.SIGACTION_FPE: "installing the SIGFPE handler failed",
    StubExit.SIGMASK: "clearing the signal mask failed",
    StubExit.FILTER_SIZE: "the seccomp filter does not fit its buffer",
    StubExit.SECCOMP: "installing the seccomp filter failed (kernel without seccomp filter support?)",
    StubExit.NOT_TRAPPED: "the first syscall after installing the filter was not trapped",
    StubExit.HANDLER_WAIT: "the handler's FUTEX_WAIT on the handoff word failed",
    StubExit.HANDLER_NOTIFY: "the handler could not write its eventfd to notify the controller",
    StubExit.HANDLER_COMMAND: "the handler found an unknown command in the data page",
    StubExit.HANDLER_FSBASE: "the handler could not save or restore the FS/GS base (a non-canonical base?)",
}

# Plain strings for the stub's own use: pathlib costs every `aioumm run` a few milliseconds
# of imports, and only the doctor and callers wanting a Path need one.
_BIN = os.path.join(os.path.dirname(os.path.realpath(__file__)), "_bin")
#: The stub bootstrap executable built with the package, as a string.
BOOTSTRAP_FILE = os.path.join(_BIN, "aioumm-stub")
#: The flat stub code image built with the package, as a string.
CODE_IMAGE_FILE = os.path.join(_BIN, "stub_code.bin")


def bootstrap_path() -> Path:
    """The stub bootstrap executable built with the package."""
    import pathlib

    return pathlib.Path(BOOTSTRAP_FILE)


def code_image_path() -> Path:
    """The flat stub code image built with the package."""
    import pathlib

    return pathlib.Path(CODE_IMAGE_FILE)

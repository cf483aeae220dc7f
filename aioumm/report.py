"""Reports (what a stopped stub hands over) and the register view.

Everything here is read from the stub data page, which guest code can
write: ``ReportReader.read`` validates every value before it is used and raises
``StubCorrupt`` for anything out of place.
"""

from __future__ import annotations

import signal
import struct
from typing import Any, NamedTuple

from aioumm.abi import ALTSTACK_START, DATA_ADDR, DATA_SIZE, ffi, lib
from aioumm.errors import BadArgument, StubCorrupt

_CANONICAL_TOP = 1 << 47
# The FXSAVE area is 512 bytes; its software-reserved bytes 464..511 describe the XSAVE
# extension the kernel put after it (struct _fpx_sw_bytes in <asm/sigcontext.h>).
_FXSAVE_SIZE = 512
_SW_BYTES_OFFSET = 464
_SW_BYTES = struct.Struct("<IIQI")  # magic1, extended_size, xfeatures, xstate_size
_FP_XSTATE_MAGIC1 = 0x46505853


class Report(NamedTuple):
    """Why a stub stopped.

    ``signal`` is one of SIGSYS (a trapped syscall: ``syscall`` is its
    number, ``addr`` the address after the instruction, ``arch`` the
    audit arch), SIGSEGV/SIGILL/SIGFPE/SIGTRAP (``addr`` is ``si_addr``),
    or SIGALRM (``interrupt()``; ``pid`` is the sender).  ``code`` is
    ``si_code`` and ``errno`` is ``si_errno``.  (A named tuple: made once per
    round trip, it must be cheap.)
    """

    signal: int
    code: int
    errno: int
    addr: int = 0
    syscall: int = -1
    arch: int = 0
    pid: int = 0

    @property
    def signal_name(self) -> str:
        try:
            return signal.Signals(self.signal).name
        except ValueError:
            return str(self.signal)

    def __str__(self) -> str:
        if self.signal == signal.SIGSYS:
            return f"SIGSYS syscall={self.syscall}"
        return f"{self.signal_name} code={self.code} addr={self.addr:#x}"


_PROBLEMS = {
    lib.AIOUMM_REPORT_BAD_SIGNAL: "data page holds signal {r.signal}, which no stub reports",
    lib.AIOUMM_REPORT_BAD_SIGINFO: "siginfo address {r.siginfo_addr:#x} lies outside the alt stack",
    lib.AIOUMM_REPORT_BAD_UCONTEXT: "ucontext address {r.ucontext_addr:#x} lies outside the alt stack",
    lib.AIOUMM_REPORT_SIGNO_MISMATCH: "siginfo says signal {r.si_signo}, the page says {r.signal}",
}


# The leading fields of struct aioumm_report, which are a Report's (checked in tests/test_abi.py).
_REPORT_FIELDS = struct.Struct("=3qQqQq")
_new_report = tuple.__new__


class ReportReader:
    """Reads one stub's reports: validation and copying happen in C (``aioumm_read_report``).

    The signal frame usually sits at the same place in the alt stack report
    after report, so the register views over it are cached by offset.
    """

    __slots__ = ("_base", "_data", "_fields", "_frames", "_last", "_out", "_pid")

    def __init__(self, pid: int, data: Any, base: int) -> None:
        self._pid = pid
        self._data = data
        self._base = base
        self._out = ffi.new("struct aioumm_report *")
        self._fields = ffi.buffer(self._out)
        self._frames: dict[int, Any] = {}
        # The last Report read, while _out holds its fields (a failed read drops it).
        self._last: Report | None = None

    def read(self) -> tuple[Report, Any]:
        """Validate and read the pending report.

        Returns it and a ``struct stub_sigcontext *`` over the saved registers.
        Raises ``StubCorrupt`` when a value in the page is impossible.
        """
        if self._data is None:
            raise StubCorrupt(self._pid, "report read after the stub's page was released")
        r = self._out
        offset = -lib.aioumm_read_report(self._data, r)
        if offset <= 0:
            self._last = None
            raise StubCorrupt(self._pid, _PROBLEMS[-offset].format(r=r))
        report = self._last
        if offset & 1 and report is not None:  # the same fields as last time: the same Report
            offset -= 1
        else:
            offset &= ~1
            # Report._make without its length check (the struct has the fields): this is per round trip.
            report = self._last = _new_report(Report, _REPORT_FIELDS.unpack_from(self._fields))
        frame = self._frames.get(offset)
        if frame is None:
            if len(self._frames) > 64:  # a guest moving its frame around: do not grow without bound
                self._frames.clear()
            frame = self._frames[offset] = ffi.cast("struct stub_sigcontext *", self._base + offset)
        return report, frame

    def close(self) -> None:
        """Forget the page (it is about to be unmapped)."""
        self._data = None
        self._frames.clear()


#: The general registers of the kernel's x86-64 sigcontext, in its order.
SIGCONTEXT_REGISTERS = [
    "r8",
    "r9",
    "r10",
    "r11",
    "r12",
    "r13",
    "r14",
    "r15",
    "rdi",
    "rsi",
    "rbp",
    "rbx",
    "rdx",
    "rax",
    "rcx",
    "rsp",
    "rip",
    "eflags",
]


class _Reg:
    """A register of the saved signal frame, read and written in place."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    # The hot path of every syscall answer: one attribute test, then cffi.
    def __get__(self, regs: Registers, owner: object = None) -> int:
        frame = regs._stub._frame
        if frame is None:
            frame = regs._frame()  # raises: not stopped
        return getattr(frame, self.name)  # type: ignore[no-any-return]

    def __set__(self, regs: Registers, value: int) -> None:
        frame = regs._stub._frame
        if frame is None:
            frame = regs._frame()  # raises: not stopped
        setattr(frame, self.name, value & 0xFFFFFFFFFFFFFFFF)


class _Base:
    """The FS or GS base, which lives in the data page, not the frame."""

    __slots__ = ("field",)

    def __init__(self, field: str) -> None:
        self.field = field

    def __get__(self, regs: Registers, owner: object = None) -> int:
        regs._frame()
        return getattr(regs._data, self.field)  # type: ignore[no-any-return]

    def __set__(self, regs: Registers, value: int) -> None:
        regs._frame()
        # The handler loads it with wrfsbase/wrgsbase, which faults on a non-canonical address.
        if not 0 <= value < _CANONICAL_TOP:
            raise BadArgument("registers", self.field, f"{value:#x} is not a user-space address")
        setattr(regs._data, self.field, value)


class Registers:
    """A writable view of a stopped stub's registers.

    Reads and writes go straight to the signal frame in the shared page;
    ``rt_sigreturn`` loads them when the stub resumes.  The view is valid
    only while the stub is stopped; touching it at any other time raises
    ``StubBusy``.
    """

    __slots__ = ("_data", "_stub")

    r8 = _Reg("r8")
    r9 = _Reg("r9")
    r10 = _Reg("r10")
    r11 = _Reg("r11")
    r12 = _Reg("r12")
    r13 = _Reg("r13")
    r14 = _Reg("r14")
    r15 = _Reg("r15")
    rdi = _Reg("rdi")
    rsi = _Reg("rsi")
    rbp = _Reg("rbp")
    rbx = _Reg("rbx")
    rdx = _Reg("rdx")
    rax = _Reg("rax")
    rcx = _Reg("rcx")
    rsp = _Reg("rsp")
    rip = _Reg("rip")
    eflags = _Reg("eflags")
    fs_base = _Base("fs_base")
    gs_base = _Base("gs_base")

    def __init__(self, stub: Any, data: Any) -> None:
        self._stub = stub
        self._data = data

    def _frame(self) -> Any:
        return self._stub._stopped_frame()

    def as_dict(self) -> dict[str, int]:
        """Every register by name (a snapshot)."""
        out = {name: getattr(self, name) for name in SIGCONTEXT_REGISTERS}
        out["fs_base"] = self.fs_base
        out["gs_base"] = self.gs_base
        return out

    def fpstate(self) -> bytes:
        """A copy of the saved FPU/vector state (the XSAVE area of the signal frame).

        Its size is the kernel's ``xstate_size`` for this CPU (512 bytes of
        legacy FXSAVE state where no extended state was saved).  Hand it back
        with ``set_fpstate`` (a guest signal handler's frame keeps it meanwhile).
        """
        start, size = self._fpstate_area()
        return bytes(self._stub._page[start : start + size])

    def set_fpstate(self, state: bytes) -> None:
        """Replace the saved FPU/vector state with ``state`` (as ``fpstate`` returned it)."""
        start, size = self._fpstate_area()
        if len(state) != size:
            raise BadArgument("set_fpstate", "state", f"{len(state)} bytes, this frame holds {size}")
        # The kernel checks the XSAVE header on sigreturn; a bad one only costs this stub a SIGSEGV.
        self._stub._page[start : start + size] = state

    def _fpstate_area(self) -> tuple[int, int]:
        """Offset in the data page and size of the frame's XSAVE area, checked against the alt stack."""
        frame = self._frame()
        addr = int(frame.fpstate)
        lo, hi = ALTSTACK_START, DATA_ADDR + DATA_SIZE
        if not (lo <= addr <= hi - _FXSAVE_SIZE and addr % 64 == 0):
            raise StubCorrupt(self._stub.pid, f"fpstate address {addr:#x} lies outside the alt stack")
        start = addr - DATA_ADDR
        magic, extended, _features, xstate = _SW_BYTES.unpack_from(self._stub._page, start + _SW_BYTES_OFFSET)
        if magic == _FP_XSTATE_MAGIC1 and _FXSAVE_SIZE <= xstate <= extended and addr + extended <= hi:
            return start, xstate
        return start, _FXSAVE_SIZE

    def trap_state(self) -> tuple[int, int, int]:
        """The error code, trap number and CR2 of the fault that stopped the stub (as its frame has them)."""
        f = self._frame()
        return (int(f.err), int(f.trapno), int(f.cr2))

    def syscall_args(self) -> tuple[int, int, int, int, int, int]:
        """The six syscall argument registers, in order."""
        f = self._frame()
        return (f.rdi, f.rsi, f.rdx, f.r10, f.r8, f.r9)

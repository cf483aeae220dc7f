"""Reports (what a stopped stub hands over) and the register view.

Everything here is read from the stub data page, which guest code can
write: ``read_report`` validates every value before it is used and raises
``StubCorrupt`` for anything out of place.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Any

from aioumm.abi import ALTSTACK_START, DATA_ADDR, DATA_SIZE, ffi
from aioumm.errors import BadArgument, StubCorrupt

#: Signals a stub reports; anything else in the page is corruption.
REPORTED_SIGNALS = frozenset(
    {signal.SIGSEGV, signal.SIGSYS, signal.SIGALRM, signal.SIGTRAP, signal.SIGILL, signal.SIGFPE}
)
_SIGINFO_SIZE = ffi.sizeof("struct stub_siginfo")
_UCONTEXT_SIZE = ffi.sizeof("struct stub_ucontext")
_DATA_END = DATA_ADDR + DATA_SIZE
_CANONICAL_TOP = 1 << 47


@dataclass(frozen=True, slots=True)
class Report:
    """Why a stub stopped.

    ``signal`` is one of SIGSYS (a trapped syscall: ``syscall`` is its
    number, ``call_addr`` the address after the instruction, ``arch`` the
    audit arch), SIGSEGV/SIGILL/SIGFPE/SIGTRAP (``addr`` is ``si_addr``),
    or SIGALRM (``interrupt()``; ``pid`` is the sender).  ``code`` is
    ``si_code`` and ``errno`` is ``si_errno``.
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


def _in_altstack(addr: int, size: int, align: int) -> bool:
    return addr >= ALTSTACK_START and addr + size <= _DATA_END and addr % align == 0


def read_report(pid: int, data: Any, base: int) -> tuple[Report, Any]:
    """Validate and read the report in ``data`` (the controller's view of the page at ``base``).

    Returns the report and a ``struct stub_sigcontext *`` over the saved
    registers.  Raises ``StubCorrupt`` when a value is impossible.
    """
    sig = data.signal
    if sig not in REPORTED_SIGNALS:
        raise StubCorrupt(pid, f"data page holds signal {sig}, which no stub reports")
    info_addr = data.siginfo_addr
    uc_addr = data.ucontext_addr
    if not _in_altstack(info_addr, _SIGINFO_SIZE, 8):
        raise StubCorrupt(pid, f"siginfo address {info_addr:#x} lies outside the alt stack")
    if not _in_altstack(uc_addr, _UCONTEXT_SIZE, 8):
        raise StubCorrupt(pid, f"ucontext address {uc_addr:#x} lies outside the alt stack")
    info = ffi.cast("struct stub_siginfo *", base + (info_addr - DATA_ADDR))
    uc = ffi.cast("struct stub_ucontext *", base + (uc_addr - DATA_ADDR))
    if info.si_signo != sig:
        raise StubCorrupt(pid, f"siginfo says signal {info.si_signo}, the page says {sig}")
    if sig == signal.SIGSYS:
        report = Report(
            sig,
            info.si_code,
            info.si_errno,
            addr=info.u.sys.call_addr,
            syscall=info.u.sys.syscall,
            arch=info.u.sys.arch,
        )
    elif sig == signal.SIGALRM:
        report = Report(sig, info.si_code, info.si_errno, pid=info.u.kill.pid)
    else:
        report = Report(sig, info.si_code, info.si_errno, addr=info.u.addr)
    return report, uc.mcontext


_GPRS = [
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

    def __get__(self, regs: Registers, owner: object = None) -> int:
        return getattr(regs._frame(), self.name)  # type: ignore[no-any-return]

    def __set__(self, regs: Registers, value: int) -> None:
        setattr(regs._frame(), self.name, value & 0xFFFFFFFFFFFFFFFF)


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
        out = {name: getattr(self, name) for name in _GPRS}
        out["fs_base"] = self.fs_base
        out["gs_base"] = self.gs_base
        return out

    def syscall_args(self) -> tuple[int, int, int, int, int, int]:
        """The six syscall argument registers, in order."""
        f = self._frame()
        return (f.rdi, f.rsi, f.rdx, f.r10, f.r8, f.r9)

"""One guest process: its stub, address space, descriptors, and the serve loop.

:meth:`GuestProcess.serve` is the guest's kernel: it resumes the stub, and for each
report either answers a trapped syscall (``SIGSYS``) through the handler table,
lets a preempted guest go on (``SIGALRM``), or ends the guest for a fault it did
not (yet) get to handle (``SIGSEGV``, ``SIGILL``...: it dies of that signal, as it
would natively with no handler).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import resource
import signal
from collections.abc import Awaitable, Callable
from typing import Protocol, TextIO

from .elf import ElfImage
from .errors import GuestExit, SyscallError
from .files import FdTable, OpenFile, Vfs
from .layout import Layout, default_layout
from .loader import load_image, setup_stack
from .memory import AddressSpace, PhysMem
from .signals import SignalState
from .strace import Strace

__all__ = ["GuestProcess", "Handler", "RegsLike", "ReportLike", "StubLike"]

log = logging.getLogger("aioumm.guest")

_U64 = 0xFFFFFFFFFFFFFFFF


class RegsLike(Protocol):
    """The stub's writable register view (see ``aioumm.report.Registers``)."""

    rax: int
    rbx: int
    rcx: int
    rdx: int
    rsi: int
    rdi: int
    rbp: int
    rsp: int
    r8: int
    r9: int
    r10: int
    r11: int
    r12: int
    r13: int
    r14: int
    r15: int
    rip: int
    eflags: int
    fs_base: int


class ReportLike(Protocol):
    """Why the stub stopped (see ``aioumm.report.Report``)."""

    @property
    def signal(self) -> int: ...
    @property
    def code(self) -> int: ...
    @property
    def addr(self) -> int: ...
    @property
    def syscall(self) -> int: ...


class StubLike(Protocol):
    """The core's stub, as far as a guest process uses it."""

    @property
    def regs(self) -> RegsLike: ...
    @property
    def pid(self) -> int: ...

    def mmap(
        self, addr: int, length: int, prot: int, fd: int = -1, offset: int = 0, *, shared: bool = True
    ) -> None: ...
    def munmap(self, addr: int, length: int) -> None: ...
    def mprotect(self, addr: int, length: int, prot: int) -> None: ...
    async def flush(self) -> None: ...
    async def resume(self) -> ReportLike: ...


#: A syscall handler: ``handler(process, a0, ..., a5)`` -> result, maybe awaitable.
Handler = Callable[..., "int | Awaitable[int]"]
HANDLERS: dict[int, Handler] = {}

_GENERAL_REGS = (
    ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "eflags"]
)


class GuestProcess:
    """A guest program's process state, and the loop that serves its syscalls."""

    def __init__(
        self,
        stub: StubLike,
        *,
        layout: Layout | None = None,
        vfs: Vfs | None = None,
        fds: FdTable | None = None,
        strace: TextIO | None = None,
        physmem: PhysMem | None = None,
        ppid: int | None = None,
    ) -> None:
        self.stub = stub
        self.layout = layout if layout is not None else default_layout()
        self.mm = AddressSpace(stub, self.layout, physmem)
        self.vfs = vfs if vfs is not None else Vfs("/")
        self.fds = fds if fds is not None else FdTable()
        self.signals = SignalState()
        self.pid = stub.pid
        self.ppid = os.getppid() if ppid is None else ppid
        self.uid, self.euid = os.getuid(), os.geteuid()
        self.gid, self.egid = os.getgid(), os.getegid()
        self.exe = ""
        self.comm = b""
        self.clear_child_tid = 0
        self.robust_list = (0, 0)
        self.rlimits: dict[int, tuple[int, int]] = {}
        for res in range(16):
            try:
                self.rlimits[res] = _rlim_in(resource.getrlimit(res))
            except (ValueError, OSError):
                self.rlimits[res] = (_U64, _U64)
        self.rlimits[resource.RLIMIT_STACK] = (self.layout.stack_size, _U64)
        self.rlimits[resource.RLIMIT_NOFILE] = (self.fds.limit, self.fds.limit)
        self.strace = (
            Strace(strace) if strace is not None else None
        )
        #: Re-raise handler bugs instead of answering ENOSYS (for tests).
        self.raise_internal_errors = False

    # -------------------------------------------------------------- set-up

    def inherit_stdio(self, stdio: tuple[int, int, int] = (0, 1, 2)) -> None:
        """Guest descriptors 0, 1 and 2 become duplicates of the host descriptors ``stdio``."""
        for guest_fd, fd in enumerate(stdio):
            try:
                host = os.dup(fd)
            except OSError:
                continue  # the controller has no such descriptor: neither has the guest
            try:
                flags = fcntl.fcntl(host, fcntl.F_GETFL) & (os.O_ACCMODE | os.O_APPEND)
            except OSError:
                flags = os.O_RDWR
            self.fds.install_at(guest_fd, OpenFile(host, f"/proc/self/fd/{fd}", flags=flags))

    def exec_image(
        self, image: ElfImage, fd: int, argv: list[bytes], envp: list[bytes], execfn: bytes,
        exe_path: str,
    ) -> None:
        """Fill the (empty) address space with ``image`` and set the start registers."""
        prog = load_image(self.mm, image, fd)
        stack = setup_stack(
            self.mm, prog, argv, envp, execfn, exec_stack=image.exec_stack,
            creds=(self.uid, self.euid, self.gid, self.egid),
        )
        self.exe = exe_path
        self.comm = os.fsencode(os.path.basename(exe_path))[:15]
        regs = self.stub.regs
        for name in _GENERAL_REGS:
            setattr(regs, name, 0)
        regs.rsp = stack.sp
        regs.rip = prog.entry
        regs.fs_base = 0

    def close(self) -> None:
        """Release every descriptor and the address space's files."""
        self.fds.close_all()
        self.mm.close()
        self.vfs.close()

    # --------------------------------------------------------------- serve

    async def serve(self) -> int:
        """Run the guest until it is over; return its ``wait`` status."""
        try:
            while True:
                report = await self.stub.resume()
                sig = report.signal
                if sig == signal.SIGSYS:
                    await self.syscall(report.syscall)
                elif sig == signal.SIGALRM:
                    continue  # preempted: nothing to do but go on
                else:
                    self._fault(report)
        except GuestExit as done:
            if self.strace is not None:
                sig = done.wait_status & 0x7F
                if sig:
                    self.strace.emit(f"+++ killed by {_signame(sig)} +++")
                else:
                    self.strace.emit(f"+++ exited with {done.wait_status >> 8} +++")
            return done.wait_status

    def _fault(self, report: ReportLike) -> None:
        if self.strace is not None:
            self.strace.emit(
                f"--- {_signame(report.signal)} {{si_signo={_signame(report.signal)}, "
                f"si_code={report.code}, si_addr={report.addr:#x}}} ---"
            )
        raise GuestExit.killed(report.signal)

    async def syscall(self, nr: int) -> None:
        """Answer one trapped syscall (the stub is stopped with its registers in view)."""
        regs = self.stub.regs
        fetch = getattr(regs, "syscall_args", None)  # one frame lookup, when the view offers it
        args: tuple[int, ...] = (
            fetch() if fetch is not None else (regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9)
        )
        handler = HANDLERS.get(nr)
        unknown = handler is None
        try:
            if handler is None:
                result = -errno.ENOSYS
            else:
                res = handler(self, *args)
                result = res if isinstance(res, int) else await res
        except SyscallError as exc:
            result = -exc.errno
        except GuestExit:
            if self.strace is not None:
                self.strace.call(nr, args, None, self.mm)
            raise
        except OSError as exc:
            result = -(exc.errno or errno.EIO)
        except Exception:
            if self.raise_internal_errors:
                raise
            log.exception("internal error serving syscall %d; answering ENOSYS", nr)
            result = -errno.ENOSYS
        if self.strace is not None:
            self.strace.call(nr, args, result, self.mm, unknown=unknown)
        regs.rax = result & _U64
        if self.signals.has_deliverable():
            self.signals.deliver()


def _rlim_in(lim: tuple[int, int]) -> tuple[int, int]:
    return tuple(_U64 if v == resource.RLIM_INFINITY else v for v in lim)  # type: ignore[return-value]


def _signame(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"

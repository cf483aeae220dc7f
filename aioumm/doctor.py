"""``aioumm doctor``: does this machine have what the stubs need?

Every check *uses* the feature rather than reading a version number: a
seccomp filter is installed in a throw-away child and made to trap, a
``futex_waitv`` is issued, a child is killed and reaped through its pidfd,
and finally a real stub is spawned and driven through a few hundred trapped
syscalls.  A kernel that claims a feature but refuses it (a container's own
seccomp policy, a hardened config) is therefore reported as it behaves.

Probes that could disturb the caller run in forked children (a seccomp
filter can never be removed from a process), every child is reaped and
every descriptor closed whatever happens, and each child arms an alarm so a
stuck probe cannot hang the doctor.

Checks are *required* (the core cannot run without them) or *optional* (the
core works around their absence, or only the benchmarks use them).  The
exit status is 0 when every required check passes.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import platform
import resource
import select
import signal
import socket
import statistics
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from aioumm import abi
from aioumm.loop import Controller, auxv_value, features, run

__all__ = ["PROBES", "Check", "Missing", "main", "run_checks"]

# Numbers from the x86-64 syscall table and the uapi headers; Python's os
# module has no wrappers for these.
_NR_GETPID = 39
_NR_GETPPID = 110
_NR_SECCOMP = 317
_NR_CLOSE_RANGE = 436
_NR_FUTEX_WAITV = 449
_PR_SET_NO_NEW_PRIVS = 38
_SECCOMP_SET_MODE_FILTER = 1
_SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
_SECCOMP_RET_TRAP = 0x00030000
_SECCOMP_RET_USER_NOTIF = 0x7FC00000
_SECCOMP_RET_ALLOW = 0x7FFF0000
_AUDIT_ARCH_X86_64 = 0xC000003E
_SECCOMP_IOCTL_NOTIF_RECV = 0xC0502100  # _IOWR('!', 0, struct seccomp_notif)
_SECCOMP_IOCTL_NOTIF_SEND = 0xC0182101  # _IOWR('!', 1, struct seccomp_notif_resp)
_SECCOMP_NOTIF = struct.Struct("<QII iIQ6Q")  # id, pid, flags, seccomp_data{nr, arch, ip, args[6]}
_SECCOMP_NOTIF_RESP = struct.Struct("<QqiI")  # id, val, error, flags
_FUTEX2_SIZE_U32 = 2
_CLOCK_MONOTONIC = 1
_AT_MINSIGSTKSZ = 51

# BPF opcodes (linux/bpf_common.h).
_BPF_LD_W_ABS = 0x20
_BPF_JEQ_K = 0x15
_BPF_RET_K = 0x06

#: How long a probe child may live; past this its alarm kills it.
_CHILD_ALARM_S = 5
#: Trapped syscalls timed in the stub check.
_ROUND_TRIPS = 1000
#: What the probe stub's guest code answers, so a wrong answer is visible.
_NOTIF_ANSWER = 4242


class Missing(Exception):
    """A probe found its feature absent or broken; the message says what it saw."""


@dataclass(frozen=True, slots=True)
class Check:
    """The outcome of one probe.

    ``detail`` says what the probe observed; ``fix`` what to do when the
    feature is missing.  A check that is not ``required`` never makes the
    doctor fail.
    """

    name: str
    present: bool
    detail: str
    fix: str
    required: bool

    def lines(self) -> list[str]:
        """The check as printed: one line, plus a hint line when missing."""
        word = "present" if self.present else "MISSING"
        scope = "" if self.required else " (optional)"
        out = [f"{word:8} {self.name}{scope}: {self.detail}"]
        if not self.present:
            out.append(f"{'':8} what to do: {self.fix}")
        return out


# --------------------------------------------------------------------- helpers


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.prctl.restype = ctypes.c_int


def _syscall(nr: int, *args: int | None) -> int:
    """A raw syscall; returns the result or raises ``OSError`` from errno."""
    res = int(_libc.syscall(ctypes.c_long(nr), *(ctypes.c_void_p(a) for a in args)))
    if res == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return res


class _SockFilter(ctypes.Structure):
    _fields_ = (("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32))


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter)))


def _install_filter(action: int, flags: int = 0) -> int:
    """In the calling (child) process: make ``getppid`` return ``action``, allow the rest.

    Returns what ``seccomp(2)`` returns (the listener fd with NEW_LISTENER).
    """
    prog = (_SockFilter * 6)(
        _SockFilter(_BPF_LD_W_ABS, 0, 0, 4),  # seccomp_data.arch
        _SockFilter(_BPF_JEQ_K, 0, 3, _AUDIT_ARCH_X86_64),
        _SockFilter(_BPF_LD_W_ABS, 0, 0, 0),  # seccomp_data.nr
        _SockFilter(_BPF_JEQ_K, 0, 1, _NR_GETPPID),
        _SockFilter(_BPF_RET_K, 0, 0, action),
        _SockFilter(_BPF_RET_K, 0, 0, _SECCOMP_RET_ALLOW),
    )
    fprog = _SockFprog(len(prog), prog)
    if _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    return _syscall(_NR_SECCOMP, _SECCOMP_SET_MODE_FILTER, flags, ctypes.addressof(fprog))


def _fork(body: Callable[[], int]) -> int:
    """Run ``body`` in a forked child; return the child's pid (the caller reaps it).

    The child never returns into the caller's code: it leaves with
    ``os._exit`` (so no buffers or atexit handlers of the parent run twice),
    with 70 if ``body`` raised.  Its alarm bounds how long it can live.
    """
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child, which coverage does not follow
        code = 70
        try:
            signal.alarm(_CHILD_ALARM_S)
            # A probe child that dies of a signal is an expected finding, not a crash to keep.
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            code = body()
        finally:
            os._exit(code)
    return pid


def _reap(pid: int) -> int:
    """Wait for a child; its exit code, or minus the signal that killed it."""
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _describe_child(code: int, meanings: dict[int, str]) -> str:
    if code in meanings:
        return meanings[code]
    if code < 0:
        return f"the test child was killed by {signal.Signals(-code).name}"
    if code == 70:
        return "the test child failed (a syscall it needed raised an error)"
    return f"the test child exited with status {code}"


def _wait_readable(fd: int, what: str) -> None:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    if not poller.poll(_CHILD_ALARM_S * 1000):
        raise Missing(f"{what} did not happen within {_CHILD_ALARM_S}s")


# --------------------------------------------------------------------- probes


def probe_seccomp_trap() -> str:
    """A filter returning SECCOMP_RET_TRAP for getppid: SIGSYS arrives, the child survives."""
    parent = os.getpid()

    def child() -> int:
        caught: list[int] = []
        signal.signal(signal.SIGSYS, lambda signum, frame: caught.append(signum))
        try:
            _install_filter(_SECCOMP_RET_TRAP)
        except OSError:
            return 3
        answer = os.getppid()  # trapped: the kernel skips it and raises SIGSYS
        if not caught:
            return 4
        # A trapped call is not run, so it cannot have returned the real parent.
        return 5 if answer == parent else 0

    code = _reap(_fork(child))
    if code != 0:
        raise Missing(
            _describe_child(
                code,
                {
                    3: "seccomp(SECCOMP_SET_MODE_FILTER) was refused",
                    4: "the trapped syscall raised no SIGSYS",
                    5: "the 'trapped' syscall ran anyway",
                    -signal.SIGSYS: "the trapped syscall killed the child instead of raising a catchable SIGSYS",
                },
            )
        )
    return "a filtered getppid() raised SIGSYS in a test child, which caught it and went on"


def probe_user_notif() -> str:
    """A filter returning SECCOMP_RET_USER_NOTIF: this process answers the child's getppid."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)

    def child() -> int:
        ours.close()
        try:
            listener = _install_filter(_SECCOMP_RET_USER_NOTIF, _SECCOMP_FILTER_FLAG_NEW_LISTENER)
        except OSError:
            return 3
        socket.send_fds(theirs, [b"L"], [listener])
        os.close(listener)
        return 0 if os.getppid() == _NOTIF_ANSWER else 4

    listener = -1
    try:
        pid = _fork(child)
    except BaseException:
        ours.close()
        theirs.close()
        raise
    try:
        theirs.close()
        _wait_readable(ours.fileno(), "receiving the listener descriptor")
        _, fds, _, _ = socket.recv_fds(ours, 1, 1)
        if not fds:
            raise Missing("the child sent no listener descriptor (seccomp refused NEW_LISTENER?)")
        listener = fds[0]
        for extra in fds[1:]:
            os.close(extra)
        _wait_readable(listener, "the notification")
        notif = bytearray(_SECCOMP_NOTIF.size)  # the kernel wants it zeroed
        fcntl.ioctl(listener, _SECCOMP_IOCTL_NOTIF_RECV, notif, True)
        notif_id, _pid, _flags, nr = _SECCOMP_NOTIF.unpack(notif)[:4]
        if nr != _NR_GETPPID:
            raise Missing(f"the notification names syscall {nr}, not getppid ({_NR_GETPPID})")
        resp = bytearray(_SECCOMP_NOTIF_RESP.pack(notif_id, _NOTIF_ANSWER, 0, 0))
        fcntl.ioctl(listener, _SECCOMP_IOCTL_NOTIF_SEND, resp, True)
    finally:
        ours.close()
        # Closing the listener fails a still-pending notification, so the child cannot hang.
        if listener >= 0:
            os.close(listener)
        code = _reap(pid)
    if code != 0:
        raise Missing(
            _describe_child(code, {3: "seccomp(NEW_LISTENER) was refused", 4: "the answer did not reach the child"})
        )
    return f"answered a child's getppid() with {_NOTIF_ANSWER} through the listener"


def probe_futex_waitv() -> str:
    """One ``futex_waitv`` on a word that does not hold the expected value: EAGAIN at once."""

    class FutexWaitv(ctypes.Structure):
        _fields_ = (
            ("val", ctypes.c_uint64),
            ("uaddr", ctypes.c_uint64),
            ("flags", ctypes.c_uint32),
            ("reserved", ctypes.c_uint32),
        )

    word = ctypes.c_uint32(1)
    waiter = FutexWaitv(0, ctypes.addressof(word), _FUTEX2_SIZE_U32, 0)
    try:
        _syscall(_NR_FUTEX_WAITV, ctypes.addressof(waiter), 1, 0, None, _CLOCK_MONOTONIC)
    except OSError as exc:
        if exc.errno == errno.EAGAIN:
            return "futex_waitv() on a changed word returned EAGAIN, as it must"
        raise Missing(f"futex_waitv(): {errno.errorcode.get(exc.errno or 0, exc.errno)}") from None
    raise Missing("futex_waitv() returned without waiting on a word that did not match")


def probe_close_range() -> str:
    """``close_range`` closes a descriptor opened for the test."""
    fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _syscall(_NR_CLOSE_RANGE, fd, fd, 0)
    except OSError as exc:
        os.close(fd)
        raise Missing(f"close_range(): {exc.strerror}") from None
    try:
        os.fstat(fd)
    except OSError:
        return "close_range() closed a test descriptor"
    os.close(fd)
    raise Missing("close_range() succeeded but left the descriptor open")


def probe_memfd_seals() -> str:
    """A sealed memfd refuses writes and resizing."""
    fd = os.memfd_create("aioumm-doctor", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.ftruncate(fd, 4096)
        seals = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
        if fcntl.fcntl(fd, fcntl.F_GET_SEALS) & seals != seals:
            raise Missing("F_GET_SEALS does not show the seals just added")
        for what, attempt in (("write", lambda: os.pwrite(fd, b"x", 0)), ("grow", lambda: os.ftruncate(fd, 8192))):
            try:
                attempt()
            except PermissionError:
                continue
            raise Missing(f"a sealed memfd allowed a {what}")
    finally:
        os.close(fd)
    return "memfd_create() + F_ADD_SEALS: a sealed memfd refused a write and a resize"


def probe_pidfd() -> str:
    """A child is killed with ``pidfd_send_signal`` and reaped with ``waitid(P_PIDFD)``."""

    def child() -> int:
        while True:
            signal.pause()

    pid = _fork(child)
    pidfd = -1
    reaped = False
    try:
        pidfd = os.pidfd_open(pid)
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        _wait_readable(pidfd, "the pidfd becoming readable after SIGKILL")
        res = os.waitid(os.P_PIDFD, pidfd, os.WEXITED)
        reaped = res is not None
        if res is None or res.si_pid != pid or res.si_code != os.CLD_KILLED or res.si_status != signal.SIGKILL:
            raise Missing(f"waitid(P_PIDFD) reported {res}, not the child killed by SIGKILL")
    finally:
        if pidfd >= 0:
            os.close(pidfd)
        if not reaped:
            os.kill(pid, signal.SIGKILL)
            _reap(pid)
    return "pidfd_open(), pidfd_send_signal(SIGKILL), poll and waitid(P_PIDFD) on a test child"


def probe_eventfd() -> str:
    """An eventfd adds what is written and reads back empty afterwards."""
    fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
    try:
        os.eventfd_write(fd, 2)
        os.eventfd_write(fd, 3)
        if (got := os.eventfd_read(fd)) != 5:
            raise Missing(f"wrote 2 and 3, read {got}")
        try:
            os.eventfd_read(fd)
        except BlockingIOError:
            return "eventfd() counted two writes and then read empty"
        raise Missing("a drained non-blocking eventfd did not read empty")
    finally:
        os.close(fd)


def probe_mseal() -> str:
    """``mseal`` on a throw-away page (the core's own probe)."""
    if not features().mseal:
        raise Missing("mseal() is not available")
    return "mseal() is there (probed with invalid flags, sealing nothing): the stub pages will be sealed"


def probe_kcmp() -> str:
    """``kcmp(KCMP_FILE)`` tells a duplicate of a descriptor from another file."""
    a = os.memfd_create("aioumm-doctor-kcmp", os.MFD_CLOEXEC)
    b = os.dup(a)
    c = os.memfd_create("aioumm-doctor-kcmp", os.MFD_CLOEXEC)
    try:
        same, other = abi.lib.aioumm_same_file(a, b), abi.lib.aioumm_same_file(a, c)
    finally:
        for fd in (a, b, c):
            os.close(fd)
    if same < 0:
        raise Missing(f"kcmp() failed: {os.strerror(-same)}")
    if (same, other) != (1, 0):
        raise Missing(f"kcmp() said {same} for a duplicate and {other} for another file")
    return "kcmp(KCMP_FILE) told a duplicate from another file: batches use it where F_DUPFD_QUERY is missing"


def probe_dupfd_query() -> str:
    """``fcntl(F_DUPFD_QUERY)`` tells a duplicate of a descriptor from another file."""
    a = os.memfd_create("aioumm-doctor-dupfd-query", os.MFD_CLOEXEC)
    b = os.dup(a)
    c = os.memfd_create("aioumm-doctor-dupfd-query", os.MFD_CLOEXEC)
    try:
        same, other = fcntl.fcntl(a, abi.lib.F_DUPFD_QUERY, b), fcntl.fcntl(a, abi.lib.F_DUPFD_QUERY, c)
    except OSError as exc:
        raise Missing(f"fcntl(F_DUPFD_QUERY) failed: {exc.strerror}") from None
    finally:
        for fd in (a, b, c):
            os.close(fd)
    if (same, other) != (1, 0):
        raise Missing(f"F_DUPFD_QUERY said {same} for a duplicate and {other} for another file")
    return "F_DUPFD_QUERY told a duplicate from another file: batches check reused descriptor numbers with it"


def probe_fsgsbase() -> str:
    """AT_HWCAP2 says the CPU and kernel allow user-mode FS/GS base instructions."""
    if not features().fsgsbase:
        raise Missing("AT_HWCAP2 lacks HWCAP2_FSGSBASE")
    return "AT_HWCAP2 has FSGSBASE: the stub saves and restores the FS base without a syscall"


def probe_rdtscp() -> str:
    """CPUID says the CPU has RDTSCP, with which a stub tells which CPU it runs on."""
    if not features().rdtscp:
        raise Missing("CPUID 0x80000001 has no RDTSCP")
    return "the CPU has RDTSCP: a stub can tell its CPU, so both sides may spin across CPUs"


def probe_minsigstksz() -> str:
    """The kernel's minimum signal stack fits the stub's alt stack with its headroom."""
    room = abi.lib.STUB_ALTSTACK_SIZE - abi.lib.STUB_ALTSTACK_HEADROOM
    minimum = auxv_value(_AT_MINSIGSTKSZ)
    if minimum is None:
        return f"the kernel does not report AT_MINSIGSTKSZ; the stub's default fits its {room} bytes"
    if minimum > room:
        raise Missing(f"the kernel needs {minimum} bytes per signal frame, the stub has room for {room}")
    return f"the kernel needs {minimum} bytes per signal frame; the stub's alt stack has room for {room}"


def probe_stub_built() -> str:
    """The bootstrap executable and the stub code image exist and look right."""
    boot, image = abi.bootstrap_path(), abi.code_image_path()
    for path in (boot, image):
        if not path.is_file():
            raise Missing(f"{path} does not exist")
    if not os.access(boot, os.X_OK):
        raise Missing(f"{boot} is not executable")
    with open(boot, "rb") as f:
        if f.read(4) != b"\x7fELF":
            raise Missing(f"{boot} is not an ELF executable")
    size = image.stat().st_size
    if not 0 < size <= abi.CODE_SIZE:
        raise Missing(f"{image} has {size} bytes; the stub code area holds 1..{abi.CODE_SIZE}")
    return f"{boot.name} and {image.name} ({size} bytes) in {boot.parent}"


async def _drive_stub() -> str:
    # The guest code: `syscall; jmp back to it`.  Each resume runs one trapped
    # syscall, so one resume is one full round trip through the handoff.
    code = b"\x0f\x05\xeb\xfc"
    addr = 0x400000
    memfd = os.memfd_create("aioumm-doctor-code", os.MFD_CLOEXEC)
    try:
        os.ftruncate(memfd, abi.PAGE_SIZE)
        os.pwrite(memfd, code, 0)
        async with Controller() as ctl:
            started = time.perf_counter()
            stub = await ctl.spawn()
            spawn_s = time.perf_counter() - started
            stub.mmap(addr, abi.PAGE_SIZE, 0x1 | 0x4, memfd, 0)  # PROT_READ | PROT_EXEC, the memfd passed over
            await stub.flush()
            stub.regs.rip = addr
            stub.regs.rax = _NR_GETPID
            times = []
            for _ in range(_ROUND_TRIPS):
                t = time.perf_counter()
                report = await stub.resume()
                times.append(time.perf_counter() - t)
                if report.signal != signal.SIGSYS or report.syscall != _NR_GETPID:
                    raise Missing(f"the stub reported {report}, expected a trapped getpid")
                stub.regs.rax = _NR_GETPID
            stub.kill()
            await stub.wait_exit()
    finally:
        os.close(memfd)
    median = statistics.median(times) * 1e6
    return (
        f"spawned in {spawn_s * 1e3:.1f} ms; {_ROUND_TRIPS} trapped syscalls, "
        f"round trip median {median:.1f} us, fastest {min(times) * 1e6:.1f} us"
    )


def probe_stub_runs() -> str:
    """Spawn one real stub through ``Controller`` and time trapped-syscall round trips."""
    return run(_drive_stub())


@dataclass(frozen=True, slots=True)
class _Probe:
    name: str
    run: Callable[[], str]
    fix: str
    required: bool = True


_KERNEL_FIX = "run a newer Linux kernel ({}) built with {}, outside any container policy that blocks it"

PROBES: tuple[_Probe, ...] = (
    _Probe(
        "seccomp filter with SECCOMP_RET_TRAP",
        probe_seccomp_trap,
        _KERNEL_FIX.format(">= 3.5", "CONFIG_SECCOMP_FILTER"),
    ),
    _Probe(
        "seccomp user notification",
        probe_user_notif,
        _KERNEL_FIX.format(">= 5.0", "CONFIG_SECCOMP_FILTER") + "; only the benchmarks use it",
        required=False,
    ),
    _Probe(
        "futex_waitv",
        probe_futex_waitv,
        _KERNEL_FIX.format(">= 5.16", "CONFIG_FUTEX") + "; only the benchmarks' helper-thread bridge uses it",
        required=False,
    ),
    _Probe("close_range", probe_close_range, _KERNEL_FIX.format(">= 5.9", "the defaults")),
    _Probe("memfd_create + sealing", probe_memfd_seals, _KERNEL_FIX.format(">= 3.17", "CONFIG_MEMFD_CREATE")),
    _Probe(
        "pidfd_open + pidfd_send_signal + waitid(P_PIDFD)",
        probe_pidfd,
        _KERNEL_FIX.format(">= 5.4", "the defaults"),
    ),
    _Probe("eventfd", probe_eventfd, _KERNEL_FIX.format(">= 2.6.27", "CONFIG_EVENTFD")),
    _Probe(
        "mseal",
        probe_mseal,
        _KERNEL_FIX.format(">= 6.10", "the defaults") + "; without it guest code could remap the stub pages",
        required=False,
    ),
    _Probe(
        "F_DUPFD_QUERY",
        probe_dupfd_query,
        _KERNEL_FIX.format(">= 6.10", "the defaults") + "; without it batches compare descriptors with kcmp (slower)",
        required=False,
    ),
    _Probe(
        "kcmp",
        probe_kcmp,
        _KERNEL_FIX.format(">= 3.5", "CONFIG_KCMP")
        + "; without it and F_DUPFD_QUERY batches compare inodes with fstat (slower)",
        required=False,
    ),
    _Probe(
        "FSGSBASE",
        probe_fsgsbase,
        "a CPU with FSGSBASE and a kernel >= 5.9; without it the stub uses arch_prctl (slower), nothing breaks",
        required=False,
    ),
    _Probe(
        "RDTSCP",
        probe_rdtscp,
        "a CPU (or virtual CPU model) with RDTSCP; without it nobody spins across CPUs, nothing breaks",
        required=False,
    ),
    _Probe(
        "AT_MINSIGSTKSZ vs the stub's alt stack",
        probe_minsigstksz,
        "enlarge STUB_ALTSTACK_SIZE (and STUB_DATA_SIZE) in aioumm/stub_src/stub_abi.h and reinstall",
    ),
    _Probe(
        "stub binary and code image",
        probe_stub_built,
        "reinstall the package (`pip install -e .` builds the stub with gcc and make)",
    ),
    _Probe(
        "a real stub through Controller",
        probe_stub_runs,
        "fix the checks above; if they all pass, the message says which bootstrap step failed",
    ),
)


def run_checks() -> list[Check]:
    """Run every probe, in order; a probe that raises becomes a missing feature."""
    checks = []
    for probe in PROBES:
        try:
            detail, present = probe.run(), True
        except Missing as exc:
            detail, present = str(exc), False
        except Exception as exc:  # any failure of a probe is a finding, never a traceback
            detail, present = f"{type(exc).__name__}: {exc}", False
        checks.append(Check(probe.name, present, detail, probe.fix, probe.required))
    return checks


def main(out: TextIO | None = None) -> int:
    """Print every check; 0 when every required feature is present, else 1."""
    out = out if out is not None else sys.stdout
    uname = os.uname()
    print(
        f"aioumm doctor: Linux {uname.release} {uname.machine}, Python {platform.python_version()}",
        file=out,
        flush=True,
    )
    checks = run_checks()
    for check in checks:
        for line in check.lines():
            print(line, file=out)
    missing = [c.name for c in checks if c.required and not c.present]
    optional = [c.name for c in checks if not c.required and not c.present]
    if missing:
        print(f"{len(missing)} required feature(s) missing: {', '.join(missing)}", file=out)
        return 1
    extra = f" ({len(optional)} optional missing)" if optional else ""
    print(f"all {sum(c.required for c in checks)} required features present{extra}", file=out)
    return 0

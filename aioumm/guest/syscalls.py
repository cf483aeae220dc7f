"""The syscalls a guest can make, served from Python.

Each handler takes the :class:`~aioumm.guest.process.GuestProcess` and the raw
argument registers (unsigned 64-bit values, exactly as the guest left them) and
returns the result, or an awaitable of it when it has to wait (a pipe, a sleep).
Failures are raised as :class:`SyscallError` (or come from a host ``OSError``)
and become ``-errno``; a bad guest pointer is a :class:`GuestFault`, ``EFAULT``.
Every argument is checked the way Linux checks it, because guest code is not
trusted: nothing a guest passes can make a handler touch memory or descriptors
that are not the guest's own.

Anything not listed here answers ``-ENOSYS`` (see ``GuestProcess.syscall``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import importlib
import os
import select
import stat
import struct
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from . import procfs
from .errors import SyscallError
from .files import FifoEnd, Loc, OpenFile, guest_fd_alias, wait_fd
from .futex import futex
from .kernel import OUTER_GROUP
from .process import HANDLERS, GuestProcess, Handler
from .signalfd import SIGNALFD_SIGINFO_SIZE, SignalFile
from .signals import SI_USER, UNBLOCKABLE, SigInfo
from .table import NUMBERS

__all__ = ["syscall"]

F = TypeVar("F", bound=Handler)

AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
AT_REMOVEDIR = 0x200
AT_EACCESS = 0x200
AT_SYMLINK_FOLLOW = 0x400
AT_NO_AUTOMOUNT = 0x800
AT_EMPTY_PATH = 0x1000
AT_STATX_SYNC_TYPE = 0x6000

PATH_MAX = 4096
#: Linux caps one read or write at this many bytes.
MAX_RW_COUNT = 0x7FFFF000
UIO_MAXIOV = 1024

_TIMESPEC = struct.Struct("<qq")
_IOVEC = struct.Struct("<QQ")
_RLIMIT = struct.Struct("<QQ")
_U64 = struct.Struct("<Q")
_I32 = struct.Struct("<i")
_PIPEFDS = struct.Struct("<ii")
_STAT = struct.Struct("<QQQIIIiQqqqqqqqqq24x")
_STATX_HEAD = struct.Struct("<IIQIIIHHQQQQ")
_STATX_TS = struct.Struct("<qIi")
_UTSNAME_FIELD = 65

PER_LINUX32 = 0x0008

STATX_BASIC_STATS = 0x7FF
STATX_RESERVED = 0x80000000


def syscall(*names: str) -> Callable[[F], F]:
    """Register the decorated function as the handler of the named syscalls."""

    def register(fn: F) -> F:
        for name in names:
            HANDLERS[NUMBERS[name]] = fn
        return fn

    return register


def on_first_call(module: str, *names: str) -> None:
    """Have the first call of any of ``names`` import the handler module ``module`` and go to its handler.

    Importing the module registers its own handlers in place of these ones, for every later call.
    """

    def register(nr: int) -> None:
        def load(p: GuestProcess, *args: int) -> int | Awaitable[int]:
            importlib.import_module(module, __package__)
            handler = HANDLERS[nr]
            if handler is load:
                raise RuntimeError(f"{module} does not serve syscall {nr}")
            return handler(p, *args)

        HANDLERS[nr] = load

    for name in names:
        register(NUMBERS[name])


def s32(v: int) -> int:
    """The low 32 bits as a signed int (descriptors, pids, ints in C prototypes)."""
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


def s64(v: int) -> int:
    """The register as a signed 64-bit value (offsets, lengths declared signed)."""
    v &= 0xFFFFFFFFFFFFFFFF
    return v - (1 << 64) if v & (1 << 63) else v


def _fail(err: int) -> SyscallError:
    return SyscallError(err)


def _path(p: GuestProcess, addr: int) -> str:
    if addr == 0:
        raise _fail(errno.EFAULT)
    raw = p.mm.read_cstr(addr, PATH_MAX)
    return os.fsdecode(raw)


def _locate(p: GuestProcess, dirfd: int, path: str, *, empty_ok: bool = False) -> Loc:
    """Where ``path`` names, relative to guest ``dirfd`` (``AT_FDCWD``: the cwd)."""
    if not path and not empty_ok:
        raise _fail(errno.ENOENT)
    if path.startswith("/"):
        return p.vfs.locate(path)
    fd = s32(dirfd)
    if fd == AT_FDCWD:
        return p.vfs.locate(path)
    base = p.fds.get(fd)
    if path and not base.is_dir:
        raise _fail(errno.ENOTDIR)
    return p.vfs.locate(path, base)


# ----------------------------------------------------------------- memory


@syscall("brk")
def sys_brk(p: GuestProcess, addr: int, *_: int) -> int:
    return p.mm.sys_brk(addr)


@syscall("mmap")
def sys_mmap(p: GuestProcess, addr: int, length: int, prot: int, flags: int, fd: int, off: int) -> int:
    file = None
    if not flags & 0x20:  # MAP_ANONYMOUS
        file = p.fds.get(s32(fd))
    return p.mm.sys_mmap(addr, length, prot, flags & 0xFFFFFFFF, file, off)


@syscall("munmap")
def sys_munmap(p: GuestProcess, addr: int, length: int, *_: int) -> int:
    return p.mm.sys_munmap(addr, length)


@syscall("mprotect")
def sys_mprotect(p: GuestProcess, addr: int, length: int, prot: int, *_: int) -> int:
    return p.mm.sys_mprotect(addr, length, prot)


@syscall("mremap")
def sys_mremap(p: GuestProcess, old: int, old_size: int, new_size: int, flags: int, new: int, *_: int) -> int:
    return p.mm.sys_mremap(old, old_size, new_size, flags, new)


@syscall("msync")
def sys_msync(p: GuestProcess, addr: int, length: int, flags: int, *_: int) -> int:
    return p.mm.sys_msync(addr, length, s32(flags))


@syscall("mlock")
def sys_mlock(p: GuestProcess, addr: int, length: int, *_: int) -> int:
    return p.mm.sys_mlock(addr, length)


@syscall("mlock2")
def sys_mlock2(p: GuestProcess, addr: int, length: int, flags: int, *_: int) -> int:
    if flags & ~1:  # MLOCK_ONFAULT
        raise _fail(errno.EINVAL)
    return p.mm.sys_mlock(addr, length)


@syscall("munlock")
def sys_munlock(p: GuestProcess, addr: int, length: int, *_: int) -> int:
    return p.mm.sys_mlock(addr, length)


@syscall("mlockall")
def sys_mlockall(p: GuestProcess, flags: int, *_: int) -> int:
    # MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT (not alone); every page is resident already.
    if not flags or flags & ~0x7 or flags == 0x4:
        raise _fail(errno.EINVAL)
    return 0


@syscall("munlockall")
def sys_munlockall(p: GuestProcess, *_: int) -> int:
    return 0


@syscall("madvise")
def sys_madvise(p: GuestProcess, addr: int, length: int, advice: int, *_: int) -> int:
    return p.mm.sys_madvise(addr, length, s32(advice))


# -------------------------------------------------------- TLS and threads

ARCH_SET_GS = 0x1001
ARCH_SET_FS = 0x1002
ARCH_GET_FS = 0x1003
ARCH_GET_GS = 0x1004


@syscall("arch_prctl")
def sys_arch_prctl(p: GuestProcess, code: int, addr: int, *_: int) -> int:
    if code == ARCH_SET_FS:
        if addr >= p.layout.task_top:
            raise _fail(errno.EPERM)  # not a canonical user address
        p.stub.regs.fs_base = addr
        return 0
    if code == ARCH_GET_FS:
        p.mm.write_u64(addr, p.stub.regs.fs_base)
        return 0
    # GS belongs to the stub's handler; CET and CPUID faulting are not offered.
    raise _fail(errno.EINVAL)


@syscall("set_tid_address")
def sys_set_tid_address(p: GuestProcess, tidptr: int, *_: int) -> int:
    p.clear_child_tid = tidptr
    return p.tid


@syscall("set_robust_list")
def sys_set_robust_list(p: GuestProcess, head: int, length: int, *_: int) -> int:
    if length != 24:  # sizeof(struct robust_list_head)
        raise _fail(errno.EINVAL)
    p.robust_list = (head, length)
    return 0


@syscall("rseq")
def sys_rseq(p: GuestProcess, *_: int) -> int:
    # Restartable sequences need the kernel to fix up the guest on preemption;
    # glibc runs fine without them when registration fails.
    raise _fail(errno.ENOSYS)


@syscall("futex")
def sys_futex(
    p: GuestProcess, uaddr: int, op: int, val: int, utime: int, uaddr2: int, val3: int
) -> int | Awaitable[int]:
    return futex(p, uaddr, op, val, utime, uaddr2, val3)


# -------------------------------------------------------------- identity


@syscall("getuid")
def sys_getuid(p: GuestProcess, *_: int) -> int:
    return p.uid


@syscall("geteuid")
def sys_geteuid(p: GuestProcess, *_: int) -> int:
    return p.euid


@syscall("getgid")
def sys_getgid(p: GuestProcess, *_: int) -> int:
    return p.gid


@syscall("getegid")
def sys_getegid(p: GuestProcess, *_: int) -> int:
    return p.egid


def _put_ids(p: GuestProcess, addrs: tuple[int, int, int], ids: tuple[int, int, int]) -> int:
    for addr in addrs:
        p.mm.views(addr, 4, write=True)
    for addr, v in zip(addrs, ids, strict=True):
        p.mm.write(addr, struct.pack("<I", v))
    return 0


@syscall("getresuid")
def sys_getresuid(p: GuestProcess, r: int, e: int, s: int, *_: int) -> int:
    return _put_ids(p, (r, e, s), (p.uid, p.euid, p.euid))


@syscall("getresgid")
def sys_getresgid(p: GuestProcess, r: int, e: int, s: int, *_: int) -> int:
    return _put_ids(p, (r, e, s), (p.gid, p.egid, p.egid))


@syscall("getgroups")
def sys_getgroups(p: GuestProcess, size: int, lst: int, *_: int) -> int:
    if s32(size) < 0:
        raise _fail(errno.EINVAL)
    return 0


@syscall("uname")
def sys_uname(p: GuestProcess, buf: int, *_: int) -> int:
    host = os.uname()
    machine = "i686" if p.personality & 0xFF == PER_LINUX32 else "x86_64"
    fields = ("Linux", host.nodename, host.release, host.version, machine, "(none)")
    blob = b"".join(os.fsencode(f)[: _UTSNAME_FIELD - 1].ljust(_UTSNAME_FIELD, b"\0") for f in fields)
    p.mm.write(buf, blob)
    return 0


@syscall("prctl")
def sys_prctl(p: GuestProcess, option: int, a2: int, a3: int, a4: int, a5: int, *_: int) -> int:
    option = s32(option)
    if option == 38:  # PR_SET_NO_NEW_PRIVS: once set, for good (fork and exec keep it)
        if a2 != 1 or a3 or a4 or a5:
            raise _fail(errno.EINVAL)
        p.no_new_privs = True
        return 0
    if option == 39:  # PR_GET_NO_NEW_PRIVS
        if a2 or a3 or a4 or a5:
            raise _fail(errno.EINVAL)
        return int(p.no_new_privs)
    if option == 15:  # PR_SET_NAME: at most 15 bytes are kept
        try:
            name = p.mm.read_cstr(a2, 16)
        except SyscallError as exc:
            if exc.errno != errno.ENAMETOOLONG:
                raise
            name = p.mm.read(a2, 15)
        p.comm = name[:15]
        return 0
    if option == 16:  # PR_GET_NAME
        p.mm.write(a2, p.comm[:15].ljust(16, b"\0"))
        return 0
    if option == 3:  # PR_GET_DUMPABLE
        return 1
    if option in (1, 4):  # PR_SET_PDEATHSIG, PR_SET_DUMPABLE: accepted, nothing to do
        return 0
    raise _fail(errno.EINVAL)


@syscall("prlimit64")
def sys_prlimit64(p: GuestProcess, pid: int, res: int, new: int, old: int, *_: int) -> int:
    if s32(pid) not in (0, p.pid):
        raise _fail(errno.ESRCH)
    if res >= 16:
        raise _fail(errno.EINVAL)
    cur = p.rlimits[res]
    want = None
    if new:
        want = _RLIMIT.unpack(p.mm.read(new, 16))
        if want[0] > want[1]:
            raise _fail(errno.EINVAL)
        if want[1] > cur[1] and p.euid != 0:
            raise _fail(errno.EPERM)
    if old:
        p.mm.write(old, _RLIMIT.pack(*cur))
    if want is not None:
        p.rlimits[res] = (want[0], want[1])
    return 0


@syscall("getrlimit")
def sys_getrlimit(p: GuestProcess, res: int, out: int, *_: int) -> int:
    return sys_prlimit64(p, 0, res, 0, out)


@syscall("setrlimit")
def sys_setrlimit(p: GuestProcess, res: int, new: int, *_: int) -> int:
    return sys_prlimit64(p, 0, res, new, 0)


@syscall("getrandom")
def sys_getrandom(p: GuestProcess, buf: int, count: int, flags: int, *_: int) -> int:
    if flags & ~0x7:  # GRND_NONBLOCK | GRND_RANDOM | GRND_INSECURE
        raise _fail(errno.EINVAL)
    if flags & 0x6 == 0x6:
        raise _fail(errno.EINVAL)
    n = min(count, 1 << 25)
    p.mm.write(buf, os.urandom(n))
    return n


def _affinity_target(p: GuestProcess, pid: int) -> GuestProcess:
    q = p if s32(pid) == 0 else p.kernel.get(s32(pid)) if s32(pid) > 0 else None
    if q is None:
        raise _fail(errno.ESRCH)
    return q


def _cpumask_bytes(p: GuestProcess) -> int:
    """The size of the host's CPU mask (``cpumask_size()``): whole 64-bit words."""
    return ((max(p.kernel.cpus) // 64) + 1) * 8


@syscall("sched_getaffinity")
def sys_sched_getaffinity(p: GuestProcess, pid: int, size: int, mask: int, *_: int) -> int:
    q = _affinity_target(p, pid)
    cpus = q.affinity if q.affinity is not None else p.kernel.cpus
    nbytes = _cpumask_bytes(p)
    if size < nbytes or size & 7:
        raise _fail(errno.EINVAL)
    bits = sum(1 << c for c in cpus)
    p.mm.write(mask, bits.to_bytes(nbytes, "little"))
    return nbytes


@syscall("sched_setaffinity")
def sys_sched_setaffinity(p: GuestProcess, pid: int, size: int, mask: int, *_: int) -> int:
    """Kept for ``sched_getaffinity`` to report; the stub itself is not moved."""
    q = _affinity_target(p, pid)
    nbytes = min(size & 0xFFFFFFFF, _cpumask_bytes(p))  # Linux reads no more than its mask
    bits = int.from_bytes(p.mm.read(mask, nbytes), "little") if nbytes else 0
    cpus = frozenset(c for c in p.kernel.cpus if bits >> c & 1)
    if not cpus:
        raise _fail(errno.EINVAL)
    q.affinity = cpus
    return 0


#: The real-time policies (SCHED_FIFO, SCHED_RR) and the others Linux knows
#: (SCHED_OTHER, SCHED_BATCH, SCHED_IDLE, SCHED_DEADLINE, SCHED_EXT).
_RT_POLICIES = (1, 2)
_OTHER_POLICIES = (0, 3, 5, 6, 7)


@syscall("sched_get_priority_max")
def sys_sched_get_priority_max(p: GuestProcess, policy: int, *_: int) -> int:
    if s32(policy) in _RT_POLICIES:
        return 99
    if s32(policy) in _OTHER_POLICIES:
        return 0
    raise _fail(errno.EINVAL)


@syscall("sched_get_priority_min")
def sys_sched_get_priority_min(p: GuestProcess, policy: int, *_: int) -> int:
    if s32(policy) in _RT_POLICIES:
        return 1
    if s32(policy) in _OTHER_POLICIES:
        return 0
    raise _fail(errno.EINVAL)


@syscall("sched_getscheduler")
def sys_sched_getscheduler(p: GuestProcess, pid: int, *_: int) -> int:
    """Every guest runs under SCHED_OTHER (its stub keeps its host policy)."""
    if s32(pid) < 0:
        raise _fail(errno.EINVAL)
    _affinity_target(p, pid)
    return 0


@syscall("sched_getparam")
def sys_sched_getparam(p: GuestProcess, pid: int, param: int, *_: int) -> int:
    if not param or s32(pid) < 0:
        raise _fail(errno.EINVAL)
    _affinity_target(p, pid)
    p.mm.write(param, bytes(4))  # sched_priority: 0 under SCHED_OTHER
    return 0


@syscall("getcpu")
def sys_getcpu(p: GuestProcess, cpu: int, node: int, *_: int) -> int:
    """The CPU the guest's stub last ran on, on NUMA node 0."""
    here = 0
    with contextlib.suppress(OSError, ValueError, IndexError), open(f"/proc/{p.vfs.proc_pid}/stat", "rb") as f:
        here = int(f.read().rsplit(b")", 1)[1].split()[36])  # field 39, "processor"
    if cpu:
        p.mm.write(cpu, struct.pack("<I", here))
    if node:
        p.mm.write(node, bytes(4))
    return 0


@syscall("sched_yield")
def sys_sched_yield(p: GuestProcess, *_: int) -> int:
    return 0


@syscall("umask")
def sys_umask(p: GuestProcess, mask: int, *_: int) -> int:
    old = p.vfs.umask
    p.vfs.umask = mask & 0o777
    return old


# ------------------------------------------------------------------ time

_CLOCKS = frozenset({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11})
CLOCK_PROCESS_CPUTIME_ID = 2
CLOCK_THREAD_CPUTIME_ID = 3


def _host_clock(p: GuestProcess, clk: int) -> int:
    clk = s32(clk)
    if clk not in _CLOCKS:
        raise _fail(errno.EINVAL)
    # The guest's own CPU clocks are the stub's (a CPU-time clock id names a pid).
    if clk == CLOCK_PROCESS_CPUTIME_ID:
        return ((~p.host_pid) << 3) | 2
    if clk == CLOCK_THREAD_CPUTIME_ID:
        return ((~p.host_pid) << 3) | 6
    return clk


def _clock_ns(p: GuestProcess, clk: int) -> int:
    try:
        return time.clock_gettime_ns(_host_clock(p, clk))
    except OSError:
        return time.clock_gettime_ns(s32(clk) if s32(clk) not in (2, 3) else time.CLOCK_PROCESS_CPUTIME_ID)


@syscall("clock_gettime")
def sys_clock_gettime(p: GuestProcess, clk: int, tp: int, *_: int) -> int:
    ns = _clock_ns(p, clk)
    p.mm.write(tp, _TIMESPEC.pack(*divmod(ns, 1_000_000_000)))
    return 0


@syscall("clock_getres")
def sys_clock_getres(p: GuestProcess, clk: int, tp: int, *_: int) -> int:
    res = time.clock_getres(_host_clock(p, clk)) if s32(clk) not in (2, 3) else 1e-9
    if tp:
        ns = max(1, round(res * 1e9))
        p.mm.write(tp, _TIMESPEC.pack(*divmod(ns, 1_000_000_000)))
    return 0


@syscall("gettimeofday")
def sys_gettimeofday(p: GuestProcess, tv: int, tz: int, *_: int) -> int:
    ns = time.clock_gettime_ns(time.CLOCK_REALTIME)
    if tv:
        sec, rem = divmod(ns, 1_000_000_000)
        p.mm.write(tv, _TIMESPEC.pack(sec, rem // 1000))
    if tz:
        p.mm.write(tz, bytes(8))  # struct timezone: UTC, no DST
    return 0


@syscall("time")
def sys_time(p: GuestProcess, tloc: int, *_: int) -> int:
    now = time.clock_gettime_ns(time.CLOCK_REALTIME) // 1_000_000_000
    if tloc:
        p.mm.write(tloc, _U64.pack(now))
    return now


def _timespec(p: GuestProcess, addr: int) -> float:
    sec, nsec = _TIMESPEC.unpack(p.mm.read(addr, 16))
    if sec < 0 or not 0 <= nsec < 1_000_000_000:
        raise _fail(errno.EINVAL)
    return float(sec + nsec / 1e9)


#: Longest single wait handed to the loop (event-loop timers overflow past some limit).
_MAX_SLEEP = float(1 << 30)


async def _sleep(seconds: float, clock: int = time.CLOCK_MONOTONIC) -> int:
    """The guest waits until ``clock`` has moved on by ``seconds``; the loop (and every other guest) goes on.

    The loop's timers may fire early by up to a millisecond (libuv counts whole
    milliseconds), and a sleep must never be shorter than asked: the clock is read
    again and the rest slept.
    """
    end = time.clock_gettime_ns(clock) + int(seconds * 1e9)
    while (left := end - time.clock_gettime_ns(clock)) > 0:
        await asyncio.sleep(min(left / 1e9 + 0.0001, _MAX_SLEEP))
    return 0


async def _sleep_rem(p: GuestProcess, seconds: float, rem: int, name: str = "nanosleep") -> int:
    # Cut short by a signal: the time left goes to ``rem``; should no handler run
    # (a stop signal), restart_syscall sleeps until the same end.
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    try:
        return await _sleep(seconds)
    except asyncio.CancelledError:
        p.restart_block = (name, lambda: _sleep_rem(p, max(end - loop.time(), 0.0), rem, name))
        if rem:
            left = max(end - loop.time(), 0.0)
            sec = int(left)
            with contextlib.suppress(SyscallError):
                p.mm.write(rem, _TIMESPEC.pack(sec, min(int((left - sec) * 1e9), 999_999_999)))
        raise


@syscall("nanosleep")
def sys_nanosleep(p: GuestProcess, req: int, rem: int, *_: int) -> int | Awaitable[int]:
    return _sleep_rem(p, _timespec(p, req), rem)


@syscall("clock_nanosleep")
def sys_clock_nanosleep(p: GuestProcess, clk: int, flags: int, req: int, rem: int, *_: int) -> int | Awaitable[int]:
    clk = s32(clk)
    if clk not in (0, 1, 7, 11):  # REALTIME, MONOTONIC, BOOTTIME, TAI
        raise _fail(errno.EINVAL)
    delay = _timespec(p, req)
    if flags & 1:  # TIMER_ABSTIME: nothing to say about the time left
        return _sleep(max(delay - time.clock_gettime_ns(clk) / 1e9, 0.0), clk)
    return _sleep_rem(p, delay, rem, "clock_nanosleep")


@syscall("restart_syscall")
def sys_restart_syscall(p: GuestProcess, *_: int) -> int | Awaitable[int]:
    """Go on with the sleep a signal without a handler cut short (EINTR: there is none)."""
    block, p.restart_block = p.restart_block, None
    if block is None:
        return -errno.EINTR
    name, resume = block
    p.trace_args = f"<... resuming interrupted {name} ...>"
    return resume()


# ------------------------------------------------------------ file system


def _new_fd(p: GuestProcess, host: int, path: str, flags: int) -> int:
    try:
        file = OpenFile(host, path, flags=flags)
    except BaseException:
        os.close(host)
        raise
    try:
        return p.fds.install(file, cloexec=bool(flags & os.O_CLOEXEC))
    except SyscallError:
        file.close()
        raise


def _open(p: GuestProcess, dirfd: int, path_addr: int, flags: int, mode: int) -> int | Awaitable[int]:
    return _open_path(p, dirfd, _path(p, path_addr), flags, mode)


def _open_path(p: GuestProcess, dirfd: int, path: str, flags: int, mode: int, depth: int = 0) -> int | Awaitable[int]:
    alias = guest_fd_alias(path) if path.startswith("/") else None
    if alias is not None:
        return _reopen(p, alias, flags)
    node = _proc_node(p, dirfd, path)
    if isinstance(node, procfs.Redirect):
        path = node.path
    elif node is not None:
        return _open_proc_node(p, node, flags, mode, depth)
    loc = _locate(p, dirfd, path)
    flags = s32(flags) & 0xFFFFFFFF
    create_mode = (mode & 0o7777) & ~p.vfs.umask
    waits = not flags & (os.O_NONBLOCK | os.O_PATH)
    try:
        host = p.vfs.open(loc, flags & ~os.O_CLOEXEC, create_mode)
    except OSError as exc:
        if exc.errno == errno.ENXIO and waits and flags & os.O_ACCMODE == os.O_WRONLY:
            fifo = _fifo_of(p, loc, flags)
            if fifo is not None:
                return _open_fifo_for_writing(p, fifo, loc, flags)
        raise
    name = loc.path if loc.path.startswith("/") else _guest_name(p, host)
    if flags & os.O_PATH or not stat.S_ISFIFO(os.fstat(host).st_mode):
        return _new_fd(p, host, name, flags)
    try:
        file = OpenFile(host, name, flags=flags)
    except BaseException:
        os.close(host)
        raise
    file.fifo_end = end = FifoEnd(host, flags)
    if waits and flags & os.O_ACCMODE == os.O_RDONLY:
        return _open_fifo_for_reading(p, file, end)
    return _install(p, file, flags)


def _install(p: GuestProcess, file: OpenFile, flags: int) -> int:
    try:
        return p.fds.install(file, cloexec=bool(flags & os.O_CLOEXEC))
    except SyscallError:
        file.close()
        raise


def _fifo_of(p: GuestProcess, loc: Loc, flags: int) -> int | None:
    """An ``O_PATH`` descriptor of the FIFO at ``loc`` (None: it is no FIFO, ``ENXIO`` stands)."""
    try:
        fd = p.vfs.open(loc, os.O_PATH | (flags & os.O_NOFOLLOW))
    except OSError:
        return None
    if stat.S_ISFIFO(os.fstat(fd).st_mode):
        return fd
    os.close(fd)
    return None


async def _open_fifo_for_reading(p: GuestProcess, file: OpenFile, end: FifoEnd) -> int:
    """A blocking open of a FIFO for reading: it waits for a writer (a signal cuts it short)."""
    try:
        await end.wait_for_writer(file.host_fd)
        os.set_blocking(file.host_fd, True)  # the loop may have made it non-blocking
    except BaseException:
        file.close()
        raise
    return _install(p, file, file.flags)


async def _open_fifo_for_writing(p: GuestProcess, fifo: int, loc: Loc, flags: int) -> int:
    """A blocking open of a FIFO for writing: it waits for a reader (a signal cuts it short)."""
    end = FifoEnd(fifo, flags)  # a waiting writer counts, so a reader opening now need not wait
    try:
        host = await end.wait_for_reader(fifo, flags)
        try:
            os.set_blocking(host, True)
            file = OpenFile(host, loc.path if loc.path.startswith("/") else _guest_name(p, host), flags=flags)
        except BaseException:
            os.close(host)
            raise
    except BaseException:
        end.close()
        raise
    finally:
        os.close(fifo)
    file.fifo_end = end
    return _install(p, file, flags)


#: Links followed in one lookup of the guest's /proc, at most (Linux: 40 in all).
_MAX_PROC_LINKS = 8


def _proc_node(p: GuestProcess, dirfd: int, path: str) -> procfs.Node | None:
    """What ``path`` (relative to guest ``dirfd``) is in the guest's ``/proc``, if it is made there.

    A relative path counts when ``dirfd`` is a ``/proc`` directory made there
    (``openat(procfd, "self/stat")``).
    """
    if not path.startswith("/"):
        fd = s32(dirfd)
        if not path:
            return None
        if fd == AT_FDCWD:
            if not _cwd_in_proc(p):
                return None
            path = p.vfs.cwd + "/" + path
        else:
            base = p.fds.get(fd)
            if not isinstance(base, procfs.ProcDirFile):
                return None
            path = base.path + "/" + path
    return procfs.resolve(p, path)


def _cwd_in_proc(p: GuestProcess) -> bool:
    """Whether the working directory is a directory of the guest's ``/proc`` made there."""
    cwd = p.vfs.cwd
    if cwd != "/proc" and not cwd.startswith("/proc/"):
        return False
    try:
        return isinstance(procfs.resolve(p, cwd), procfs.ProcDir)
    except SyscallError:
        return False


def _open_proc_node(p: GuestProcess, node: procfs.Node, flags: int, mode: int, depth: int) -> int | Awaitable[int]:
    flags = s32(flags) & 0xFFFFFFFF
    if isinstance(node, procfs.ProcLink):
        if flags & os.O_NOFOLLOW:
            raise _fail(errno.ELOOP)
        if node.file is not None:
            return _reopen_file(p, node.file, flags)
        if depth >= _MAX_PROC_LINKS or node.dest is None:
            raise _fail(errno.ELOOP)
        return _open_path(p, AT_FDCWD, node.dest, flags, mode, depth + 1)
    if flags & os.O_CREAT and flags & os.O_EXCL:
        raise _fail(errno.EEXIST)
    if isinstance(node, procfs.ProcFile):
        if flags & os.O_DIRECTORY:
            raise _fail(errno.ENOTDIR)
        return _synthetic_file(p, node.path, node.contents, flags)
    assert isinstance(node, procfs.ProcDir)
    if flags & os.O_ACCMODE != os.O_RDONLY or flags & os.O_CREAT:
        raise _fail(errno.EISDIR)
    host = os.open(node.host, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        file: OpenFile = procfs.ProcDirFile(host, node, flags=flags)
    except BaseException:
        os.close(host)
        raise
    try:
        return p.fds.install(file, cloexec=bool(flags & os.O_CLOEXEC))
    except SyscallError:
        file.close()
        raise


def _synthetic_file(p: GuestProcess, path: str, contents: bytes, flags: int) -> int:
    """A read-only file with ``contents``, opened for the guest (a sealed memfd)."""
    if s32(flags) & os.O_ACCMODE != os.O_RDONLY:
        raise _fail(errno.EACCES)
    host = os.memfd_create("aioumm-proc", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.write(host, contents)
        os.lseek(host, 0, os.SEEK_SET)
        fcntl.fcntl(host, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK)
    except BaseException:
        os.close(host)
        raise
    return _new_fd(p, host, path, s32(flags) & 0xFFFFFFFF)


def _reopen(p: GuestProcess, fd: int, flags: int) -> int:
    """``open("/dev/fd/N")``: a new open of what guest ``fd`` is, as Linux's magic link gives.

    Served from the guest's own table; the path is never looked up, so it can
    never reach the controller's descriptors.
    """
    return _reopen_file(p, p.fds.get(fd), flags)


def _reopen_file(p: GuestProcess, file: OpenFile, flags: int) -> int:
    """A new open of what ``file`` is (a guest descriptor's open file)."""
    flags = s32(flags) & 0xFFFFFFFF
    keep = (os.O_ACCMODE | os.O_APPEND | os.O_NONBLOCK | os.O_TRUNC | os.O_DIRECTORY | os.O_NOFOLLOW) & flags
    try:
        # Non-blocking, as every open here: reopening a pipe end must not wait for the other end.
        host = os.open(f"/proc/self/fd/{file.host_fd}", keep | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as exc:
        raise _fail(exc.errno or errno.EIO) from None
    if not flags & os.O_NONBLOCK:
        os.set_blocking(host, True)
    return _new_fd(p, host, file.path, flags)


def _guest_name(p: GuestProcess, host: int) -> str:
    try:
        return p.vfs.path_of(host)
    except OSError:
        return ""


@syscall("openat")
def sys_openat(p: GuestProcess, dirfd: int, path: int, flags: int, mode: int, *_: int) -> int | Awaitable[int]:
    return _open(p, dirfd, path, flags, mode)


@syscall("open")
def sys_open(p: GuestProcess, path: int, flags: int, mode: int, *_: int) -> int | Awaitable[int]:
    return _open(p, AT_FDCWD, path, flags, mode)


@syscall("creat")
def sys_creat(p: GuestProcess, path: int, mode: int, *_: int) -> int | Awaitable[int]:
    return _open(p, AT_FDCWD, path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, mode)


@syscall("close")
def sys_close(p: GuestProcess, fd: int, *_: int) -> int:
    p.fds.close(s32(fd))
    return 0


@syscall("close_range")
def sys_close_range(p: GuestProcess, first: int, last: int, flags: int, *_: int) -> int:
    first, last = first & 0xFFFFFFFF, last & 0xFFFFFFFF
    if flags & ~0x6 or first > last:  # CLOSE_RANGE_UNSHARE | CLOSE_RANGE_CLOEXEC
        raise _fail(errno.EINVAL)
    for fd in [fd for fd in p.fds if first <= fd <= last]:
        if flags & 0x4:
            p.fds.set_cloexec(fd, True)
        else:
            p.fds.close(fd)
    return 0


def _count(n: int) -> int:
    return min(n, MAX_RW_COUNT)


def _reading(p: GuestProcess, fd: int) -> OpenFile:
    """Guest ``fd``'s open file for a read: ``EBADF`` unless it was opened for reading."""
    file = p.fds.get(s32(fd))
    if not file.readable:
        raise _fail(errno.EBADF)
    return file


def _writing(p: GuestProcess, fd: int) -> OpenFile:
    """Guest ``fd``'s open file for a write: ``EBADF`` unless it was opened for writing."""
    file = p.fds.get(s32(fd))
    if not file.writable:
        raise _fail(errno.EBADF)
    return file


def _positional(p: GuestProcess, fd: int, *, write: bool) -> OpenFile:
    """Guest ``fd``'s open file for ``pread``/``pwrite`` and their vector forms.

    As Linux checks it: a file with no positions (a pipe, FIFO, socket or
    terminal: a stream) is ``ESPIPE`` before its access mode is looked at.
    """
    file = p.fds.get(s32(fd))
    if file.flags & os.O_PATH:
        raise _fail(errno.EBADF)
    if file.may_block:
        raise _fail(errno.ESPIPE)
    if not (file.writable if write else file.readable):
        raise _fail(errno.EBADF)
    return file


def _check_count(count: int) -> None:
    # A negative count makes the buffer reach past user space: Linux's access_ok
    # says EFAULT before anything else looks at it.
    if s64(count) < 0:
        raise _fail(errno.EFAULT)


class _NoBuffer(SyscallError):
    """``EFAULT``: not one byte of a buffer inside user space can be used."""

    def __init__(self) -> None:
        super().__init__(errno.EFAULT)


def _buffer(p: GuestProcess, file: OpenFile, buf: int, count: int, *, into: bool) -> list[memoryview]:
    """The guest buffer of a read (``into`` it) or write, as far as it can be used.

    A file's read or write copies up to the first bad page and answers the
    count copied: only one that has something to copy and can copy none of it
    is ``EFAULT`` (a read at the end of a file never touches its buffer).  A
    pipe, socket or terminal copies in whole pieces, so its buffer is taken
    whole or not at all (see the README for sockets).
    """
    n = _count(count)
    if file.may_block:
        return p.mm.views(buf, n, write=into)
    if buf + count > p.mm.layout.task_top:
        raise _fail(errno.EFAULT)  # access_ok, of the whole count: before anything else
    views = p.mm.usable_views(buf, n, write=into)
    if not views and n:
        raise _NoBuffer()
    return views


def _nothing_to_read(file: OpenFile, offset: int | None = None) -> bool:
    """Whether a read of ``file`` would answer 0 at once: it ends where it is (or at ``offset``)."""
    if file.may_block:
        return False  # a pipe or terminal read would wait first
    try:
        at = os.lseek(file.host_fd, 0, os.SEEK_CUR) if offset is None else offset
        return not os.pread(file.host_fd, 1, at)
    except OSError:
        return False


def _read_buffer(
    p: GuestProcess, file: OpenFile, buf: int, count: int, offset: int | None = None
) -> list[memoryview] | None:
    """:func:`_buffer` for a read; None when the read answers 0 without touching it."""
    try:
        views = _buffer(p, file, buf, count, into=True)
    except _NoBuffer:
        if _nothing_to_read(file, offset):
            return None
        raise
    return views or None


@syscall("read")
def sys_read(p: GuestProcess, fd: int, buf: int, count: int, *_: int) -> int | Awaitable[int]:
    file = _reading(p, fd)
    if isinstance(file, SignalFile):
        return read_signalfd(p, file, buf, count)
    _check_count(count)
    if file.is_dir:
        raise _fail(errno.EISDIR)
    views = _read_buffer(p, file, buf, count)
    if views is None:
        return 0
    return file.readv(views)


def read_signalfd(p: GuestProcess, file: SignalFile, buf: int, count: int) -> int | Awaitable[int]:
    """A read of a signalfd: the reader's pending signals in its mask, one record each."""
    n = (count & 0xFFFFFFFFFFFFFFFF) // SIGNALFD_SIGINFO_SIZE
    if n == 0:
        raise _fail(errno.EINVAL)
    n = min(n, 64)
    # As Linux: the signals are taken, then copied out (a bad buffer loses them: EFAULT).
    got = file.take(p.signals, n)
    if got:
        p.mm.write(buf, got)
        return len(got)
    if file.nonblocking:
        raise _fail(errno.EAGAIN)

    async def wait() -> int:
        p.signalfd_waiting = file.mask
        try:
            while True:
                await p.signal_event()
                data = file.take(p.signals, n)
                if data:
                    p.mm.write(buf, data)
                    return len(data)
        finally:
            p.signalfd_waiting = 0

    return wait()


@syscall("write")
def sys_write(p: GuestProcess, fd: int, buf: int, count: int, *_: int) -> int | Awaitable[int]:
    file = _writing(p, fd)
    _check_count(count)
    views = _buffer(p, file, buf, count, into=False)
    if not views:
        return 0
    return _write(p, file, views)


async def _write(p: GuestProcess, file: OpenFile, views: list[memoryview], offset: int | None = None) -> int:
    try:
        return await file.writev(views, offset)
    except BrokenPipeError:
        p.signals.send(13, SigInfo(13, SI_USER, p.pid, p.uid))  # SIGPIPE: by default the guest dies of it
        raise


@syscall("pread64")
def sys_pread64(p: GuestProcess, fd: int, buf: int, count: int, off: int, *_: int) -> int | Awaitable[int]:
    if s64(off) < 0:
        raise _fail(errno.EINVAL)
    file = _positional(p, fd, write=False)
    _check_count(count)
    views = _read_buffer(p, file, buf, count, s64(off))
    if views is None:
        return 0
    return file.readv(views, s64(off))


@syscall("pwrite64")
def sys_pwrite64(p: GuestProcess, fd: int, buf: int, count: int, off: int, *_: int) -> int | Awaitable[int]:
    if s64(off) < 0:
        raise _fail(errno.EINVAL)
    file = _positional(p, fd, write=True)
    _check_count(count)
    views = _buffer(p, file, buf, count, into=False)
    if not views:
        return 0
    return _write(p, file, views, s64(off))


def _iovecs(p: GuestProcess, iov: int, cnt: int, *, write: bool, file: OpenFile | None = None) -> list[memoryview]:
    """The buffers an iovec array names.  With ``file`` (not a pipe, socket or
    terminal), as far as they can be used: up to the first bad page, as
    :func:`_buffer` takes one buffer."""
    n = s32(cnt)
    if n < 0 or n > UIO_MAXIOV:
        raise _fail(errno.EINVAL)
    raw = p.mm.read(iov, n * _IOVEC.size)
    pieces: list[tuple[int, int]] = []
    total = 0
    for base, length in _IOVEC.iter_unpack(raw):
        if s64(length) < 0:
            raise _fail(errno.EINVAL)
        if base + length > p.mm.layout.task_top:
            raise _fail(errno.EFAULT)  # access_ok, for every vector before any copy
        total += length
        if total > MAX_RW_COUNT:
            length -= total - MAX_RW_COUNT
        if length:
            pieces.append((base, length))
        if total >= MAX_RW_COUNT:
            break
    out: list[memoryview] = []
    if file is None or file.may_block:
        for base, length in pieces:
            out.extend(p.mm.views(base, length, write=write))
        return out
    for base, length in pieces:
        got = p.mm.usable_views(base, length, write=write)
        out.extend(got)
        if sum(len(v) for v in got) < length:
            break
    if pieces and not out:
        raise _NoBuffer()
    return out


def _read_iovecs(p: GuestProcess, file: OpenFile, iov: int, cnt: int, offset: int | None = None) -> list[memoryview]:
    """:func:`_iovecs` for a read: no buffers (an answer of 0) when it would read nothing."""
    try:
        return _iovecs(p, iov, cnt, write=True, file=file)
    except _NoBuffer:
        if _nothing_to_read(file, offset):
            return []
        raise


@syscall("readv")
def sys_readv(p: GuestProcess, fd: int, iov: int, cnt: int, *_: int) -> int | Awaitable[int]:
    file = _reading(p, fd)
    views = _read_iovecs(p, file, iov, cnt)
    if not views:
        return 0
    return file.readv(views)


@syscall("writev")
def sys_writev(p: GuestProcess, fd: int, iov: int, cnt: int, *_: int) -> int | Awaitable[int]:
    file = _writing(p, fd)
    views = _iovecs(p, iov, cnt, write=False, file=file)
    if not views:
        return 0
    return _write(p, file, views)


@syscall("preadv")
def sys_preadv(p: GuestProcess, fd: int, iov: int, cnt: int, off: int, *_: int) -> int | Awaitable[int]:
    if s64(off) < 0:
        raise _fail(errno.EINVAL)
    file = _positional(p, fd, write=False)
    views = _read_iovecs(p, file, iov, cnt, s64(off))
    if not views:
        return 0
    return file.readv(views, s64(off))


@syscall("pwritev")
def sys_pwritev(p: GuestProcess, fd: int, iov: int, cnt: int, off: int, *_: int) -> int | Awaitable[int]:
    if s64(off) < 0:
        raise _fail(errno.EINVAL)
    file = _positional(p, fd, write=True)
    views = _iovecs(p, iov, cnt, write=False, file=file)
    if not views:
        return 0
    return _write(p, file, views, s64(off))


@syscall("sendfile")
def sys_sendfile(p: GuestProcess, out_fd: int, in_fd: int, offp: int, count: int, *_: int) -> int | Awaitable[int]:
    src, out = _reading(p, in_fd), _writing(p, out_fd)
    if s64(count) < 0:
        raise _fail(errno.EINVAL)
    offset = None
    if offp:
        offset = s64(p.mm.read_u64(offp))
        if offset < 0:
            raise _fail(errno.EINVAL)
    if count == 0:
        return 0

    async def run() -> int:
        try:
            n, new = await src.sendfile_to(out, offset, _count(count))
        except BrokenPipeError:
            p.signals.send(13, SigInfo(13, SI_USER, p.pid, p.uid))
            raise
        if offp and new is not None:
            p.mm.write_u64(offp, new)
        return n

    return run()


@syscall("lseek")
def sys_lseek(p: GuestProcess, fd: int, off: int, whence: int, *_: int) -> int:
    file = p.fds.get(s32(fd))
    whence = s32(whence)
    if not 0 <= whence <= 4:
        raise _fail(errno.EINVAL)
    if file.is_dir:
        if whence != 0:
            raise _fail(errno.EINVAL)
        return file.seek_dir(s64(off))
    if isinstance(file, SignalFile):
        return 0  # a signalfd has no position: Linux's noop_llseek
    return os.lseek(file.host_fd, s64(off), whence)


def _pack_stat(st: os.stat_result) -> bytes:
    a, m, c = (divmod(t, 1_000_000_000) for t in (st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns))
    return _STAT.pack(
        st.st_dev,
        st.st_ino,
        st.st_nlink,
        st.st_mode,
        st.st_uid,
        st.st_gid,
        0,
        st.st_rdev,
        st.st_size,
        st.st_blksize,
        st.st_blocks,
        a[0],
        a[1],
        m[0],
        m[1],
        c[0],
        c[1],
    )


def _own_fd(p: GuestProcess, path: str) -> OpenFile | None:
    """What ``/dev/fd/N`` (``/dev/stdin``...) leads to: the guest's own descriptor N.

    None for any other path; ``ENOENT`` when the guest has no descriptor N (as
    the missing ``/proc/self/fd/N`` entry gives).
    """
    alias = guest_fd_alias(path) if path.startswith("/") else None
    if alias is None:
        return None
    if alias not in p.fds:
        raise _fail(errno.ENOENT)
    return p.fds.get(alias)


def _stat_at(p: GuestProcess, dirfd: int, path_addr: int, flags: int) -> os.stat_result:
    if flags & ~(AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT | AT_EMPTY_PATH | AT_STATX_SYNC_TYPE):
        raise _fail(errno.EINVAL)
    path = _path(p, path_addr)
    if not path and flags & AT_EMPTY_PATH:
        if s32(dirfd) == AT_FDCWD:
            return os.stat(".", dir_fd=p.vfs.cwd_fd)
        return os.fstat(p.fds.get(s32(dirfd)).host_fd)
    own = _own_fd(p, path) if not flags & AT_SYMLINK_NOFOLLOW else None
    if own is not None:
        return os.fstat(own.host_fd)
    return _stat_path(p, dirfd, path, not flags & AT_SYMLINK_NOFOLLOW)


def _stat_path(p: GuestProcess, dirfd: int, path: str, follow: bool, depth: int = 0) -> os.stat_result:
    node = _proc_node(p, dirfd, path)
    if isinstance(node, procfs.Redirect):
        path = node.path
    elif isinstance(node, procfs.ProcLink) and follow:
        if node.file is not None:
            return os.fstat(node.file.host_fd)
        if depth >= _MAX_PROC_LINKS or node.dest is None:
            raise _fail(errno.ELOOP)
        return _stat_path(p, AT_FDCWD, node.dest, follow, depth + 1)
    elif node is not None:
        return procfs.stat_of(node)
    return p.vfs.stat(_locate(p, dirfd, path), follow=follow)


@syscall("fstat")
def sys_fstat(p: GuestProcess, fd: int, buf: int, *_: int) -> int:
    st = os.fstat(p.fds.get(s32(fd)).host_fd)
    p.mm.write(buf, _pack_stat(st))
    return 0


@syscall("newfstatat")
def sys_newfstatat(p: GuestProcess, dirfd: int, path: int, buf: int, flags: int, *_: int) -> int:
    p.mm.views(buf, _STAT.size, write=True)  # EFAULT before any work
    p.mm.write(buf, _pack_stat(_stat_at(p, dirfd, path, flags)))
    return 0


@syscall("stat")
def sys_stat(p: GuestProcess, path: int, buf: int, *_: int) -> int:
    return sys_newfstatat(p, AT_FDCWD & 0xFFFFFFFF, path, buf, 0)


@syscall("lstat")
def sys_lstat(p: GuestProcess, path: int, buf: int, *_: int) -> int:
    return sys_newfstatat(p, AT_FDCWD & 0xFFFFFFFF, path, buf, AT_SYMLINK_NOFOLLOW)


def _pack_statx(st: os.stat_result) -> bytes:
    head = _STATX_HEAD.pack(
        STATX_BASIC_STATS,
        st.st_blksize,
        0,
        st.st_nlink,
        st.st_uid,
        st.st_gid,
        st.st_mode & 0xFFFF,
        0,
        st.st_ino,
        st.st_size,
        st.st_blocks,
        0,
    )

    def ts(ns: int) -> bytes:
        sec, nsec = divmod(ns, 1_000_000_000)
        return _STATX_TS.pack(sec, nsec, 0)

    body = ts(st.st_atime_ns) + bytes(16) + ts(st.st_ctime_ns) + ts(st.st_mtime_ns)
    devs = struct.pack("<IIII", os.major(st.st_rdev), os.minor(st.st_rdev), os.major(st.st_dev), os.minor(st.st_dev))
    return (head + body + devs).ljust(256, b"\0")


@syscall("statx")
def sys_statx(p: GuestProcess, dirfd: int, path: int, flags: int, mask: int, buf: int, *_: int) -> int:
    if mask & STATX_RESERVED or flags & AT_STATX_SYNC_TYPE == AT_STATX_SYNC_TYPE:
        raise _fail(errno.EINVAL)
    p.mm.views(buf, 256, write=True)
    p.mm.write(buf, _pack_statx(_stat_at(p, dirfd, path, flags & 0xFFFFFFFF)))
    return 0


# ioctl requests passed through to the host descriptor: request -> (bytes, direction).
_IOCTLS: dict[int, tuple[int, str]] = {
    0x5401: (36, "out"),  # TCGETS
    0x5402: (36, "in"),  # TCSETS
    0x5403: (36, "in"),  # TCSETSW
    0x5404: (36, "in"),  # TCSETSF
    0x5413: (8, "out"),  # TIOCGWINSZ
    0x5414: (8, "in"),  # TIOCSWINSZ
    0x541B: (4, "out"),  # FIONREAD
    # Interface queries on a socket: a struct ifreq naming the interface, answered in place.
    0x8910: (40, "inout"),  # SIOCGIFNAME
    0x8913: (40, "inout"),  # SIOCGIFFLAGS
    0x8915: (40, "inout"),  # SIOCGIFADDR
    0x8921: (40, "inout"),  # SIOCGIFMTU
    0x8927: (40, "inout"),  # SIOCGIFHWADDR
    0x8933: (40, "inout"),  # SIOCGIFINDEX
    0x8942: (40, "inout"),  # SIOCGIFTXQLEN
}


_TIOCGPGRP, _TIOCSPGRP, _TIOCGSID = 0x540F, 0x5410, 0x5429


def _terminal_ioctl(p: GuestProcess, file: OpenFile, req: int, arg: int) -> int:
    """The terminal's process group and session, in the guests' pids.

    The guests share the controller's controlling terminal (through the
    descriptors they inherit) from the session :data:`OUTER_GROUP`, whose
    foreground group they see as ``ProcessTable.terminal_pgrp``.  The host's
    answer would name a host process group that no guest is in: an
    interactive shell that compares it with its own group concludes that it
    runs in the background, stops itself with ``SIGTTIN``, and waits for good.
    While the controller itself is not in the terminal's foreground, the
    guests see a group outside their pid namespace, 0 as on Linux.
    """
    try:
        host_pgrp = os.tcgetpgrp(file.host_fd)  # ENOTTY: not a terminal, or not the controller's
    except OSError as exc:
        raise _fail(exc.errno or errno.ENOTTY) from None
    kernel = p.kernel
    if p.sid != OUTER_GROUP:
        raise _fail(errno.ENOTTY)  # a new session has no controlling terminal
    if req == _TIOCGSID:
        value = OUTER_GROUP
    elif req == _TIOCGPGRP:
        value = kernel.terminal_pgrp if host_pgrp == os.getpgrp() else 0
    else:
        pgrp = _I32.unpack(p.mm.read(arg, 4))[0]
        if pgrp < 0:
            raise _fail(errno.EINVAL)
        if pgrp != OUTER_GROUP:  # that one has members outside the run: it always exists
            members = kernel.group(pgrp)
            if not members:
                raise _fail(errno.ESRCH)
            if members[0].sid != p.sid:
                raise _fail(errno.EPERM)
        kernel.terminal_pgrp = pgrp
        return 0
    p.mm.views(arg, 4, write=True)
    p.mm.write(arg, _I32.pack(value))
    return 0


@syscall("ioctl")
def sys_ioctl(p: GuestProcess, fd: int, req: int, arg: int, *_: int) -> int:
    file = p.fds.get(s32(fd))
    req &= 0xFFFFFFFF
    if req in (_TIOCGPGRP, _TIOCSPGRP, _TIOCGSID):
        return _terminal_ioctl(p, file, req, arg)
    if req == 0x5451:  # FIOCLEX
        p.fds.set_cloexec(s32(fd), True)
        return 0
    if req == 0x5450:  # FIONCLEX
        p.fds.set_cloexec(s32(fd), False)
        return 0
    if req == 0x5421:  # FIONBIO
        on = _I32.unpack(p.mm.read(arg, 4))[0]
        file.set_status_flags(os.O_NONBLOCK if on else 0, os.O_NONBLOCK)
        return 0
    spec = _IOCTLS.get(req)
    if spec is None:
        raise _fail(errno.ENOTTY)
    size, direction = spec
    if direction == "inout":
        p.mm.views(arg, size, write=True)
        p.mm.write(arg, fcntl.ioctl(file.host_fd, req, p.mm.read(arg, size)))
    elif direction == "out":
        p.mm.views(arg, size, write=True)
        got = fcntl.ioctl(file.host_fd, req, bytes(size))
        p.mm.write(arg, got)
    else:
        fcntl.ioctl(file.host_fd, req, p.mm.read(arg, size))
    return 0


_F_DUPFD = 0
_F_GETFD = 1
_F_SETFD = 2
_F_GETFL = 3
_F_SETFL = 4
_F_GETLK = 5
_F_SETLK = 6
_F_SETLKW = 7
_F_DUPFD_CLOEXEC = 1030
_F_SETPIPE_SZ = 1031
_F_GETPIPE_SZ = 1032
_SETFL_MASK = os.O_APPEND | os.O_NONBLOCK | os.O_ASYNC | os.O_DIRECT | os.O_NOATIME


@syscall("fcntl")
def sys_fcntl(p: GuestProcess, fd: int, cmd: int, arg: int, *_: int) -> int:
    gfd = s32(fd)
    file = p.fds.get(gfd)
    cmd = s32(cmd)
    if cmd in (_F_DUPFD, _F_DUPFD_CLOEXEC):
        low = s32(arg)
        if not 0 <= low < p.fds.limit:
            raise _fail(errno.EINVAL)
        return p.fds.install(file, cloexec=cmd == _F_DUPFD_CLOEXEC, lowest=low)
    if cmd == _F_GETFD:
        return 1 if p.fds.cloexec(gfd) else 0
    if cmd == _F_SETFD:
        p.fds.set_cloexec(gfd, bool(arg & 1))
        return 0
    if cmd == _F_GETFL:
        return file.status_flags()
    if cmd == _F_SETFL:
        file.set_status_flags(arg, _SETFL_MASK)
        return 0
    if cmd in (_F_SETLK, _F_SETLKW):
        # Record locks would all belong to the controller process; with one guest
        # process per file they can never conflict, so granting them is exact.
        p.mm.read(arg, 32)
        return 0
    if cmd == _F_GETLK:
        raw = bytearray(p.mm.read(arg, 32))
        raw[0:2] = struct.pack("<h", 2)  # F_UNLCK: nothing would block it
        p.mm.write(arg, raw)
        return 0
    if cmd in (_F_GETPIPE_SZ, _F_SETPIPE_SZ):
        return fcntl.fcntl(file.host_fd, cmd, s32(arg))
    raise _fail(errno.EINVAL)


_LOCK_SH, _LOCK_EX, _LOCK_NB, _LOCK_UN = 1, 2, 4, 8
#: How often a guest waiting for a busy flock tries again, at most (from 1 ms, doubling).
_FLOCK_RETRY_MAX = 0.01


@syscall("flock")
def sys_flock(p: GuestProcess, fd: int, op: int, *_: int) -> int | Awaitable[int]:
    """``flock`` on the host descriptor: its locks belong to the open file, and each guest
    ``open`` is a host open of its own (shared by ``dup`` and ``fork`` as natively), so guests
    contend with each other, and with host processes, as they would natively.  The loop never
    blocks: a lock another holds is tried again until it is free."""
    file = p.fds.get(s32(fd))
    op = s32(op)
    kind = op & ~_LOCK_NB
    if kind not in (_LOCK_SH, _LOCK_EX, _LOCK_UN):
        raise _fail(errno.EINVAL)
    try:
        fcntl.flock(file.host_fd, kind | _LOCK_NB)
    except BlockingIOError:
        if op & _LOCK_NB:
            raise _fail(errno.EWOULDBLOCK) from None
        return _flock_wait(file, kind)
    return 0


async def _flock_wait(file: OpenFile, kind: int) -> int:
    # Nothing wakes a waiter when a lock is let go: try again, soon at first.
    delay = 0.001
    while True:
        await asyncio.sleep(delay)
        try:
            fcntl.flock(file.host_fd, kind | _LOCK_NB)
        except BlockingIOError:
            delay = min(2 * delay, _FLOCK_RETRY_MAX)
            continue
        except OSError as exc:  # the file was closed meanwhile, by another thread
            return -(exc.errno or errno.EBADF)
        return 0


@syscall("dup")
def sys_dup(p: GuestProcess, fd: int, *_: int) -> int:
    return p.fds.install(p.fds.get(s32(fd)))


@syscall("dup2")
def sys_dup2(p: GuestProcess, old: int, new: int, *_: int) -> int:
    file = p.fds.get(s32(old))
    if s32(old) == s32(new):
        return s32(new)
    p.fds.install_at(s32(new), file)
    return s32(new)


@syscall("dup3")
def sys_dup3(p: GuestProcess, old: int, new: int, flags: int, *_: int) -> int:
    if flags & ~os.O_CLOEXEC:
        raise _fail(errno.EINVAL)
    if s32(old) == s32(new):
        raise _fail(errno.EINVAL)
    file = p.fds.get(s32(old))
    p.fds.install_at(s32(new), file, cloexec=bool(flags & os.O_CLOEXEC))
    return s32(new)


@syscall("pipe2")
def sys_pipe2(p: GuestProcess, fds: int, flags: int, *_: int) -> int:
    if flags & ~(os.O_CLOEXEC | os.O_NONBLOCK | os.O_DIRECT):
        raise _fail(errno.EINVAL)
    p.mm.views(fds, 8, write=True)  # EFAULT before any descriptor exists
    r, w = os.pipe2(os.O_CLOEXEC | (flags & (os.O_NONBLOCK | os.O_DIRECT)))
    rfd = _new_fd(p, r, "pipe:", os.O_RDONLY | (flags & os.O_CLOEXEC))
    try:
        wfd = _new_fd(p, w, "pipe:", os.O_WRONLY | (flags & os.O_CLOEXEC))
    except SyscallError:
        p.fds.close(rfd)
        raise
    p.mm.write(fds, _PIPEFDS.pack(rfd, wfd))
    return 0


@syscall("pipe")
def sys_pipe(p: GuestProcess, fds: int, *_: int) -> int:
    return sys_pipe2(p, fds, 0)


def _access(p: GuestProcess, dirfd: int, path_addr: int, mode: int, flags: int) -> int:
    if mode & ~0o7 or flags & ~(AT_EACCESS | AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH):
        raise _fail(errno.EINVAL)
    follow = not flags & AT_SYMLINK_NOFOLLOW
    path = _path(p, path_addr)
    if not path and flags & AT_EMPTY_PATH:
        if s32(dirfd) != AT_FDCWD:
            p.fds.get(s32(dirfd))  # EBADF
        return 0
    own = _own_fd(p, path) if follow else None
    node = _proc_node(p, dirfd, path) if own is None else None
    for _hop in range(_MAX_PROC_LINKS):
        if not (isinstance(node, procfs.ProcLink) and follow and node.dest is not None):
            break
        dirfd, path = AT_FDCWD, node.dest
        node = _proc_node(p, dirfd, path)
    if isinstance(node, procfs.ProcLink) and follow and node.file is not None:
        own = node.file
    elif isinstance(node, (procfs.ProcFile, procfs.ProcDir, procfs.ProcLink)):
        # Made here: files read-only, directories searchable, links as they are.
        st_mode = procfs.stat_of(node).st_mode
        if mode & 2 or (mode & 1 and not stat.S_ISDIR(st_mode)):
            raise _fail(errno.EACCES)
        return 0
    elif isinstance(node, procfs.Redirect):
        path = node.path
    if own is not None:
        fd = os.dup(own.host_fd)
    else:
        fd = p.vfs.open(_locate(p, dirfd, path), os.O_PATH | (0 if follow else os.O_NOFOLLOW))
    try:
        if mode and not os.access(f"/proc/self/fd/{fd}", mode, effective_ids=bool(flags & AT_EACCESS)):
            raise _fail(errno.EACCES)
    finally:
        os.close(fd)
    return 0


@syscall("access")
def sys_access(p: GuestProcess, path: int, mode: int, *_: int) -> int:
    return _access(p, AT_FDCWD, path, mode, 0)


@syscall("faccessat")
def sys_faccessat(p: GuestProcess, dirfd: int, path: int, mode: int, *_: int) -> int:
    return _access(p, dirfd, path, mode, 0)


@syscall("faccessat2")
def sys_faccessat2(p: GuestProcess, dirfd: int, path: int, mode: int, flags: int, *_: int) -> int:
    return _access(p, dirfd, path, mode, flags)


@syscall("getcwd")
def sys_getcwd(p: GuestProcess, buf: int, size: int, *_: int) -> int:
    if p.vfs.cwd_fd >= 0 and os.fstat(p.vfs.cwd_fd).st_nlink == 0:
        raise _fail(errno.ENOENT)  # removed since: it has no path any more
    raw = os.fsencode(p.vfs.cwd) + b"\0"
    if size < len(raw):
        raise _fail(errno.ERANGE)
    p.mm.write(buf, raw)
    return len(raw)


@syscall("chdir")
def sys_chdir(p: GuestProcess, path: int, *_: int) -> int:
    name = _path(p, path)
    node = _proc_node(p, AT_FDCWD, name)
    for _hop in range(_MAX_PROC_LINKS):
        if not (isinstance(node, procfs.ProcLink) and node.dest is not None):
            break
        name = node.dest
        node = _proc_node(p, AT_FDCWD, name)
    if isinstance(node, procfs.ProcDir):
        _chdir_proc(p, node)
        return 0
    if isinstance(node, (procfs.ProcFile, procfs.ProcLink)):
        raise _fail(errno.ENOTDIR)
    p.vfs.chdir(_locate(p, AT_FDCWD, node.path if node is not None else name))
    return 0


def _chdir_proc(p: GuestProcess, node: procfs.ProcDir) -> None:
    # The host directory only stands in (for fstat); lookups under it are made by procfs.
    p.vfs.chdir(Loc(-1, node.host))
    p.vfs.cwd = node.path


@syscall("fchdir")
def sys_fchdir(p: GuestProcess, fd: int, *_: int) -> int:
    file = p.fds.get(s32(fd))
    if not file.is_dir:
        raise _fail(errno.ENOTDIR)
    if isinstance(file, procfs.ProcDirFile):
        node = procfs.resolve(p, file.path)
        if isinstance(node, procfs.ProcDir):
            _chdir_proc(p, node)
            return 0
    p.vfs.chdir(p.vfs.locate(".", file))
    return 0


@syscall("getdents64")
def sys_getdents64(p: GuestProcess, fd: int, dirp: int, count: int, *_: int) -> int:
    file = p.fds.get(s32(fd))
    p.mm.views(dirp, min(count & 0xFFFFFFFF, MAX_RW_COUNT), write=True)
    data = file.getdents64(count & 0xFFFFFFFF)
    p.mm.write(dirp, data)
    return len(data)


def _readlink(p: GuestProcess, dirfd: int, path_addr: int, buf: int, size: int) -> int:
    if s32(size) <= 0:
        raise _fail(errno.EINVAL)
    path = _path(p, path_addr)
    node = _proc_node(p, dirfd, path)
    if isinstance(node, procfs.ProcLink):
        target = os.fsencode(node.target)
    elif node is not None and not isinstance(node, procfs.Redirect):
        raise _fail(errno.EINVAL)  # not a link
    else:
        loc = _locate(p, dirfd, node.path if node is not None else path)
        with p.vfs.at(loc) as (dfd, name):
            target = os.fsencode(os.readlink(name, dir_fd=dfd))
    out = target[: s32(size)]
    p.mm.write(buf, out)
    return len(out)


@syscall("readlink")
def sys_readlink(p: GuestProcess, path: int, buf: int, size: int, *_: int) -> int:
    return _readlink(p, AT_FDCWD, path, buf, size)


@syscall("readlinkat")
def sys_readlinkat(p: GuestProcess, dirfd: int, path: int, buf: int, size: int, *_: int) -> int:
    return _readlink(p, dirfd, path, buf, size)


@syscall("unlinkat")
def sys_unlinkat(p: GuestProcess, dirfd: int, path: int, flags: int, *_: int) -> int:
    if flags & ~AT_REMOVEDIR:
        raise _fail(errno.EINVAL)
    loc = _locate(p, dirfd, _path(p, path))
    with p.vfs.at(loc) as (dfd, name):
        if flags & AT_REMOVEDIR:
            os.rmdir(name, dir_fd=dfd)
        else:
            os.unlink(name, dir_fd=dfd)
    return 0


@syscall("unlink")
def sys_unlink(p: GuestProcess, path: int, *_: int) -> int:
    return sys_unlinkat(p, AT_FDCWD & 0xFFFFFFFF, path, 0)


@syscall("rmdir")
def sys_rmdir(p: GuestProcess, path: int, *_: int) -> int:
    return sys_unlinkat(p, AT_FDCWD & 0xFFFFFFFF, path, AT_REMOVEDIR)


@syscall("renameat2")
def sys_renameat2(p: GuestProcess, olddir: int, old: int, newdir: int, new: int, flags: int, *_: int) -> int:
    if flags:
        raise _fail(errno.EINVAL)  # RENAME_NOREPLACE and friends: not offered yet
    src = _locate(p, olddir, _path(p, old))
    dst = _locate(p, newdir, _path(p, new))
    with p.vfs.at(src) as (sfd, sname), p.vfs.at(dst) as (dfd, dname):
        os.rename(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd)
    return 0


@syscall("renameat")
def sys_renameat(p: GuestProcess, olddir: int, old: int, newdir: int, new: int, *_: int) -> int:
    return sys_renameat2(p, olddir, old, newdir, new, 0)


@syscall("rename")
def sys_rename(p: GuestProcess, old: int, new: int, *_: int) -> int:
    cwd = AT_FDCWD & 0xFFFFFFFF
    return sys_renameat2(p, cwd, old, cwd, new, 0)


@syscall("mkdirat")
def sys_mkdirat(p: GuestProcess, dirfd: int, path: int, mode: int, *_: int) -> int:
    loc = _locate(p, dirfd, _path(p, path))
    with p.vfs.at(loc) as (dfd, name):
        os.mkdir(name, (mode & 0o7777) & ~p.vfs.umask, dir_fd=dfd)
    return 0


@syscall("mkdir")
def sys_mkdir(p: GuestProcess, path: int, mode: int, *_: int) -> int:
    return sys_mkdirat(p, AT_FDCWD & 0xFFFFFFFF, path, mode)


@syscall("fchmodat")
def sys_fchmodat(p: GuestProcess, dirfd: int, path: int, mode: int, *_: int) -> int:
    loc = _locate(p, dirfd, _path(p, path))
    with p.vfs.at(loc) as (dfd, name):
        os.chmod(name, mode & 0o7777, dir_fd=dfd)
    return 0


@syscall("chmod")
def sys_chmod(p: GuestProcess, path: int, mode: int, *_: int) -> int:
    return sys_fchmodat(p, AT_FDCWD & 0xFFFFFFFF, path, mode)


@syscall("fchmod")
def sys_fchmod(p: GuestProcess, fd: int, mode: int, *_: int) -> int:
    os.fchmod(p.fds.get(s32(fd)).host_fd, mode & 0o7777)
    return 0


@syscall("ftruncate")
def sys_ftruncate(p: GuestProcess, fd: int, length: int, *_: int) -> int:
    file = p.fds.get(s32(fd))
    if s64(length) < 0:
        raise _fail(errno.EINVAL)
    if not file.is_regular:
        raise _fail(errno.EINVAL)
    os.ftruncate(file.host_fd, s64(length))
    return 0


@syscall("truncate")
def sys_truncate(p: GuestProcess, path: int, length: int, *_: int) -> int:
    if s64(length) < 0:
        raise _fail(errno.EINVAL)
    fd = p.vfs.open(_locate(p, AT_FDCWD, _path(p, path)), os.O_WRONLY)
    try:
        os.ftruncate(fd, s64(length))
    finally:
        os.close(fd)
    return 0


@syscall("fsync", "fdatasync")
def sys_fsync(p: GuestProcess, fd: int, *_: int) -> int:
    file = p.fds.get(s32(fd))
    if file.is_regular:
        os.fsync(file.host_fd)
    return 0


@syscall("fadvise64")
def sys_fadvise64(p: GuestProcess, fd: int, *_: int) -> int:
    file = p.fds.get(s32(fd))
    if stat.S_ISFIFO(file.mode):
        raise _fail(errno.ESPIPE)
    return 0


@syscall("getrusage")
def sys_getrusage(p: GuestProcess, who: int, usage: int, *_: int) -> int:
    if s32(who) not in (0, -1, 1):  # RUSAGE_SELF, RUSAGE_CHILDREN, RUSAGE_THREAD
        raise _fail(errno.EINVAL)
    ns = _clock_ns(p, CLOCK_PROCESS_CPUTIME_ID) if s32(who) != -1 else 0
    sec, rem = divmod(ns, 1_000_000_000)
    p.mm.write(usage, struct.pack("<qq", sec, rem // 1000).ljust(144, b"\0"))
    return 0


@syscall("times")
def sys_times(p: GuestProcess, buf: int, *_: int) -> int:
    ticks = _clock_ns(p, CLOCK_PROCESS_CPUTIME_ID) // 10_000_000
    if buf:
        p.mm.write(buf, struct.pack("<qqqq", ticks, 0, 0, 0))
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 10_000_000


@syscall("sysinfo")
def sys_sysinfo(p: GuestProcess, info: int, *_: int) -> int:
    up = time.clock_gettime_ns(time.CLOCK_BOOTTIME) // 1_000_000_000
    load = os.getloadavg()
    pages = os.sysconf("SC_PHYS_PAGES")
    avail = os.sysconf("SC_AVPHYS_PAGES")
    size = os.sysconf("SC_PAGE_SIZE")
    raw = struct.pack(
        "<q3Q6QHH4xQQI",
        up,
        *(int(x * 65536) for x in load),
        pages * size,
        avail * size,
        0,
        0,
        0,
        0,
        1,
        0,
        0,
        0,
        1,
    )
    p.mm.write(info, raw.ljust(112, b"\0"))
    return 0


# ------------------------------------------------------------------ poll

_POLLFD = struct.Struct("<ihh")
POLLIN = 0x1
POLLOUT = 0x4
POLLERR = 0x8
POLLHUP = 0x10
POLLNVAL = 0x20
POLLRDNORM = 0x40
POLLWRNORM = 0x100
_ALWAYS = POLLERR | POLLHUP | POLLNVAL


def _poll_now(p: GuestProcess, entries: list[tuple[int, int]]) -> list[int]:
    """``revents`` of each ``(fd, events)`` entry, without waiting."""
    host = select.poll()
    wanted: dict[int, int] = {}
    for fd, events in entries:
        if fd >= 0 and fd in p.fds:
            file = p.fds.get(fd)
            if isinstance(file, SignalFile):
                file.refresh(p.signals)  # readable for this process, as it is now
            h = file.host_fd
            wanted[h] = wanted.get(h, 0) | (events & 0xFFFF)
    for h, events in wanted.items():
        host.register(h, events)
    got = dict(host.poll(0))
    out = []
    for fd, events in entries:
        if fd < 0:
            out.append(0)
        elif fd not in p.fds:
            out.append(POLLNVAL)
        else:
            out.append(got.get(p.fds.get(fd).host_fd, 0) & ((events & 0xFFFF) | _ALWAYS))
    return out


async def _poll_wait(p: GuestProcess, entries: list[tuple[int, int]], timeout: float | None) -> list[int]:
    """Wait on the loop until an entry is ready or ``timeout`` seconds passed (None: no limit)."""
    # On the real clock, not the loop's: its timers may fire a little early (see _sleep).
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        revents = _poll_now(p, entries)
        left = None if deadline is None else deadline - time.monotonic()
        if any(revents) or (left is not None and left <= 0):
            return revents
        waits = []
        for fd, events in entries:
            if fd < 0 or fd not in p.fds:
                continue
            h = p.fds.get(fd).host_fd
            if events & (POLLIN | POLLRDNORM):
                waits.append(asyncio.ensure_future(wait_fd(h)))
            if events & (POLLOUT | POLLWRNORM):
                waits.append(asyncio.ensure_future(wait_fd(h, write=True)))
        try:
            if waits:
                await asyncio.wait(
                    waits, timeout=None if left is None else left + 0.0001, return_when=asyncio.FIRST_COMPLETED
                )
            else:
                await asyncio.sleep(_MAX_SLEEP if left is None else min(left + 0.0001, _MAX_SLEEP))
        finally:
            for w in waits:
                w.cancel()
            if waits:
                await asyncio.gather(*waits, return_exceptions=True)


def _poll_masked(
    p: GuestProcess,
    entries: list[tuple[int, int]],
    timeout: float | None,
    mask: int | None,
    store: Callable[[list[int]], int],
) -> int | Awaitable[int]:
    """Poll ``entries`` with the signal ``mask`` in force (``ppoll``, ``pselect6``): at once if
    something is ready, a signal waits or ``timeout`` is 0, else a wait on the loop; ``store``
    writes the result back and returns the count."""
    st = p.signals
    if mask is not None:
        st.saved_mask = st.blocked  # back when the call returns, or after a handler ran
        st.blocked = mask & ~UNBLOCKABLE
    revents = _poll_now(p, entries)
    if any(revents) or timeout == 0 or st.has_deliverable():
        if not any(revents) and timeout != 0:
            return -errno.EINTR  # a signal is waiting already: the mask stays saved for it
        if mask is not None and st.saved_mask is not None:
            st.blocked, st.saved_mask = st.saved_mask, None
        return store(revents)

    async def wait() -> int:
        got = await _poll_wait(p, entries, timeout)  # a signal cancels this: EINTR, mask kept
        if mask is not None and st.saved_mask is not None:
            st.blocked, st.saved_mask = st.saved_mask, None
        return store(got)

    return wait()


def _poll(p: GuestProcess, fds: int, nfds: int, timeout: float | None, mask: int | None) -> int | Awaitable[int]:
    if nfds > p.rlimits[7][0]:  # RLIMIT_NOFILE
        raise _fail(errno.EINVAL)
    raw = p.mm.read(fds, nfds * _POLLFD.size) if nfds else b""
    entries = [(fd, events) for fd, events, _ in _POLLFD.iter_unpack(raw)]
    if nfds:
        p.mm.views(fds, nfds * _POLLFD.size, write=True)  # EFAULT before any wait

    def store(revents: list[int]) -> int:
        out = b"".join(_POLLFD.pack(fd, ev, rev) for (fd, ev), rev in zip(entries, revents, strict=True))
        if out:
            p.mm.write(fds, out)
        return sum(1 for r in revents if r)

    return _poll_masked(p, entries, timeout, mask, store)


@syscall("poll")
def sys_poll(p: GuestProcess, fds: int, nfds: int, timeout: int, *_: int) -> int | Awaitable[int]:
    ms = s32(timeout)
    return _poll(p, fds, nfds & 0xFFFFFFFF, None if ms < 0 else ms / 1000, None)


@syscall("ppoll")
def sys_ppoll(
    p: GuestProcess, fds: int, nfds: int, tsp: int, sigmask: int, sigsetsize: int, *_: int
) -> int | Awaitable[int]:
    timeout = _timespec(p, tsp) if tsp else None
    mask = None
    if sigmask:
        if sigsetsize != 8:
            raise _fail(errno.EINVAL)
        mask = _U64.unpack(p.mm.read(sigmask, 8))[0]
    return _poll(p, fds, nfds & 0xFFFFFFFF, timeout, mask)


# ---------------------------------------------------------------- select

_TIMEVAL = struct.Struct("<qq")
#: What each of select's three sets asks poll for, and the poll events that make it ready.
_SELECT_IN = POLLIN | POLLRDNORM | 0x80 | POLLHUP | POLLERR  # POLLRDBAND
_SELECT_OUT = POLLOUT | POLLWRNORM | 0x200 | POLLERR  # POLLWRBAND
_SELECT_EX = 0x2  # POLLPRI


def _select(
    p: GuestProcess,
    nfds: int,
    sets: tuple[int, int, int],
    timeout: float | None,
    mask: int | None,
    store_left: Callable[[float], None],
) -> int | Awaitable[int]:
    """``select``/``pselect6``: the three descriptor sets as one poll, answered as sets again."""
    n = s32(nfds)
    if n < 0:
        raise _fail(errno.EINVAL)
    n = min(n, p.fds.limit)
    size = (n + 63) // 64 * 8
    bits = [int.from_bytes(p.mm.read(addr, size), "little") if addr and size else 0 for addr in sets]
    for addr in sets:
        if addr and size:
            p.mm.views(addr, size, write=True)  # EFAULT before any wait
    wants = [(_SELECT_IN, bits[0]), (_SELECT_OUT, bits[1]), (_SELECT_EX, bits[2])]
    entries: list[tuple[int, int]] = []
    for fd in range(n):
        events = sum(ev for ev, b in wants if b >> fd & 1)
        if events:
            if fd not in p.fds:
                raise _fail(errno.EBADF)
            entries.append((fd, events))
    loop_start = time.monotonic()

    def store(revents: list[int]) -> int:
        out = [0, 0, 0]
        for (fd, _), rev in zip(entries, revents, strict=True):
            for i, (ev, b) in enumerate(wants):
                if b >> fd & 1 and rev & ev:
                    out[i] |= 1 << fd
        for addr, b in zip(sets, out, strict=True):
            if addr and size:
                p.mm.write(addr, b.to_bytes(size, "little"))
        if timeout is not None:
            store_left(max(timeout - (time.monotonic() - loop_start), 0.0))
        return sum(bin(b).count("1") for b in out)

    return _poll_masked(p, entries, timeout, mask, store)


@syscall("select")
def sys_select(p: GuestProcess, nfds: int, r: int, w: int, e: int, tvp: int, *_: int) -> int | Awaitable[int]:
    timeout = None
    if tvp:
        sec, usec = _TIMEVAL.unpack(p.mm.read(tvp, _TIMEVAL.size))
        # Whole seconds in tv_usec count as seconds (C division: towards zero).
        carry = abs(usec) // 1_000_000 * (1 if usec >= 0 else -1)
        sec, usec = sec + carry, usec - carry * 1_000_000
        if sec < 0 or usec < 0:
            raise _fail(errno.EINVAL)
        timeout = sec + usec / 1e6

    def left(seconds: float) -> None:
        sec = int(seconds)
        with contextlib.suppress(SyscallError):  # Linux does not fail a select for this
            p.mm.write(tvp, _TIMEVAL.pack(sec, int((seconds - sec) * 1e6)))

    return _select(p, nfds, (r, w, e), timeout, None, left)


@syscall("pselect6")
def sys_pselect6(p: GuestProcess, nfds: int, r: int, w: int, e: int, tsp: int, sig: int) -> int | Awaitable[int]:
    timeout = _timespec(p, tsp) if tsp else None
    mask = None
    if sig:
        ss, ss_len = struct.unpack("<QQ", p.mm.read(sig, 16))
        if ss:
            if ss_len != 8:
                raise _fail(errno.EINVAL)
            mask = _U64.unpack(p.mm.read(ss, 8))[0]

    def left(seconds: float) -> None:
        sec = int(seconds)
        with contextlib.suppress(SyscallError):
            p.mm.write(tsp, _TIMESPEC.pack(sec, int((seconds - sec) * 1e9)))

    return _select(p, nfds, (r, w, e), timeout, mask, left)


# The process calls (fork, execve, wait4, kill...) live in a module of their own.
from . import syscalls_fs, syscalls_proc, syscalls_sig  # noqa: E402, F401

# System V IPC and sockets serve few programs: their handlers (and the layers under them) are
# imported when a guest first makes one of their calls, not by every run's start-up.
on_first_call(
    ".syscalls_ipc",
    *("shmget", "shmat", "shmdt", "shmctl", "semget", "semop", "semtimedop", "semctl"),
    *("msgget", "msgsnd", "msgrcv", "msgctl"),
)
on_first_call(
    ".syscalls_net",
    *("socket", "socketpair", "bind", "listen", "connect", "accept", "accept4", "shutdown"),
    *("getsockname", "getpeername", "setsockopt", "getsockopt", "sendto", "recvfrom"),
    *("sendmsg", "recvmsg", "sendmmsg", "recvmmsg"),
)

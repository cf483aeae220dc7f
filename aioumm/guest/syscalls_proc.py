"""The process syscalls: fork, vfork, clone, execve, wait4, waitid, exit, kill, ids.

Registered with the rest of the handlers (:mod:`.syscalls` imports this module).

* ``fork``, ``vfork`` and ``clone`` without ``CLONE_VM`` make a new guest process
  in a new stub (:meth:`GuestProcess.fork`): its own copy of the address space,
  descriptors naming the same open files.  ``vfork`` (and ``clone`` with
  ``CLONE_VM | CLONE_VFORK``, as glibc's ``posix_spawn`` calls it) shares the
  parent's memory for real until the child execs or exits, and the parent's stub
  stays stopped until then.  ``clone`` with ``CLONE_THREAD`` makes a thread
  (:mod:`.threads`); ``CLONE_VM`` without it (and without ``CLONE_VFORK``) is not
  offered: ``ENOSYS``, with a note in the strace line.
* ``exit`` ends the calling thread, ``exit_group`` the process.
* ``execve``/``execveat`` find the program with :func:`.binfmt.prepare_exec` and
  replace the image in the same stub (:meth:`GuestProcess.execve`).
* ``wait4``/``waitid`` wait on the loop: the caller's stub stays stopped while its
  task awaits a child's exit; the status is encoded as Linux encodes it.
* ``kill``, ``tgkill``, ``tkill`` reach any guest of the run (``tgkill`` and
  ``tkill`` a thread of it); pids, process groups and sessions are the run's own
  (:mod:`.kernel`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import struct
from collections.abc import Awaitable

from aioumm.errors import AioummError

from .binfmt import ExecPlan, prepare_exec
from .errors import GuestExit, SyscallError
from .files import Loc
from .kernel import CLD_EXITED, CLD_KILLED, OUTER_GROUP
from .process import CLD_CONTINUED, CLD_STOPPED, UNINTERRUPTIBLE, GuestProcess
from .signals import NSIG, SI_TKILL, SI_USER, SigInfo
from .syscalls import AT_EMPTY_PATH, AT_FDCWD, AT_SYMLINK_NOFOLLOW, _locate, _path, s32, syscall
from .table import NUMBERS
from .threads import clone_thread, start_clone

__all__: list[str] = []

log = logging.getLogger("aioumm.guest")

CSIGNAL = 0xFF
CLONE_VM = 0x100
CLONE_FS = 0x200
CLONE_FILES = 0x400
CLONE_SIGHAND = 0x800
CLONE_PIDFD = 0x1000
CLONE_PTRACE = 0x2000
CLONE_VFORK = 0x4000
CLONE_PARENT = 0x8000
CLONE_THREAD = 0x10000
CLONE_SYSVSEM = 0x40000
CLONE_SETTLS = 0x80000
CLONE_PARENT_SETTID = 0x100000
CLONE_CHILD_CLEARTID = 0x200000
CLONE_DETACHED = 0x400000
CLONE_UNTRACED = 0x800000
CLONE_CHILD_SETTID = 0x1000000
CLONE_IO = 0x80000000
#: Flags a process (not a thread) made by fork, vfork or posix_spawn may carry.
_CLONE_OFFERED = (
    CSIGNAL
    | CLONE_VFORK
    | CLONE_SETTLS
    | CLONE_PARENT_SETTID
    | CLONE_CHILD_CLEARTID
    | CLONE_CHILD_SETTID
    | CLONE_DETACHED
    | CLONE_UNTRACED
    | CLONE_PTRACE
    | CLONE_IO
    | CLONE_SYSVSEM
)

WNOHANG = 1
WUNTRACED = 2
WSTOPPED = 2
WEXITED = 4
WCONTINUED = 8
WNOWAIT = 0x01000000
__WNOTHREAD = 0x20000000
__WALL = 0x40000000
__WCLONE = 0x80000000
_WAIT4_OPTIONS = WNOHANG | WUNTRACED | WCONTINUED | __WNOTHREAD | __WCLONE | __WALL
_WAITID_OPTIONS = WNOHANG | WSTOPPED | WEXITED | WCONTINUED | WNOWAIT | __WNOTHREAD | __WCLONE | __WALL

CLD_DUMPED = 3

P_ALL = 0
P_PID = 1
P_PGID = 2
P_PIDFD = 3

INT_MIN = -(1 << 31)
_SIGINFO_SIZE = 128
_RUSAGE_SIZE = 144
#: Linux's bound on one argument or environment string (32 pages).
MAX_ARG_STRLEN = 32 * 4096
#: Linux's bound on the number of argument plus environment strings.
MAX_ARG_STRINGS = 0x7FFFFFFF
#: The least room Linux leaves for arguments and environment, whatever the stack limit.
ARG_MAX = 32 * 4096
RLIMIT_STACK = 3


def _fail(err: int) -> SyscallError:
    return SyscallError(err)


# ------------------------------------------------------------------ ids


@syscall("getpid")
def sys_getpid(p: GuestProcess, *_: int) -> int:
    return p.pid


@syscall("gettid")
def sys_gettid(p: GuestProcess, *_: int) -> int:
    return p.tid


@syscall("getppid")
def sys_getppid(p: GuestProcess, *_: int) -> int:
    return p.ppid


@syscall("getpgrp")
def sys_getpgrp(p: GuestProcess, *_: int) -> int:
    return p.pgid


def _target(p: GuestProcess, pid: int) -> GuestProcess:
    pid = s32(pid)
    if pid == 0:
        return p
    q = p.kernel.get(pid) if pid > 0 else None
    if q is None:
        raise _fail(errno.ESRCH)
    return q


@syscall("getpgid")
def sys_getpgid(p: GuestProcess, pid: int, *_: int) -> int:
    return _target(p, pid).pgid


@syscall("getsid")
def sys_getsid(p: GuestProcess, pid: int, *_: int) -> int:
    return _target(p, pid).sid


@syscall("setpgid")
def sys_setpgid(p: GuestProcess, pid: int, pgid: int, *_: int) -> int:
    want = s32(pgid)
    if want < 0:
        raise _fail(errno.EINVAL)
    who = s32(pid)
    if who < 0:
        raise _fail(errno.ESRCH)
    if who in (0, p.pid):
        target = p
    else:
        child = p.children.get(who)
        if child is None:
            raise _fail(errno.ESRCH)
        if child.sid != p.sid:
            raise _fail(errno.EPERM)
        if child.did_exec:
            raise _fail(errno.EACCES)
        target = child
    if target.pid == target.sid:
        raise _fail(errno.EPERM)  # a session leader stays in its group
    group = want or target.pid
    # The first guest's group has members outside the run (whatever started it): it exists
    # in its session even when no guest is left in it.
    outer = group == OUTER_GROUP and p.sid == OUTER_GROUP
    if group != target.pid and not outer and not any(q.pgid == group and q.sid == p.sid for q in p.kernel.all()):
        raise _fail(errno.EPERM)  # no such group in this session
    target.pgid = group
    return 0


@syscall("setsid")
def sys_setsid(p: GuestProcess, *_: int) -> int:
    if any(q.pgid == p.pid for q in p.kernel.all()):
        raise _fail(errno.EPERM)  # it leads a process group already
    p.sid = p.pgid = p.pid
    return p.pid


# ----------------------------------------------------------------- exit


@syscall("exit_group")
def sys_exit_group(p: GuestProcess, code: int, *_: int) -> int:
    raise GuestExit.exited(code & 0xFF)


@syscall("exit")
def sys_exit(p: GuestProcess, code: int, *_: int) -> int:
    """Ends the calling thread; the process ends with its last thread (see :mod:`.threads`)."""
    p.thread_exit_only = True
    raise GuestExit.exited(code & 0xFF)


# --------------------------------------------------------------- signals


def _signo(sig: int) -> int:
    signo = s32(sig)
    if not 0 <= signo <= NSIG:
        raise _fail(errno.EINVAL)
    return signo


def _deliver(targets: list[GuestProcess], signo: int, sender: GuestProcess, code: int = SI_USER) -> int:
    if signo:
        for q in targets:
            q.post_signal(signo, SigInfo(signo, code, sender.pid, sender.uid))
    return 0


@syscall("kill")
def sys_kill(p: GuestProcess, pid: int, sig: int, *_: int) -> int:
    signo = _signo(sig)
    who = s32(pid)
    kernel = p.kernel
    if who > 0:
        # A thread's tid names its process too, as on Linux.
        q = kernel.get(who) or kernel.thread(who)
        targets = [q] if q is not None else []
    elif who == 0:
        targets = kernel.group(p.pgid)
    elif who == -1:
        # Everyone but init and the caller itself.
        targets = [q for q in kernel.all() if q is not kernel.init and q is not p]
    elif who == INT_MIN:
        targets = []
    else:
        targets = kernel.group(-who)
    if not targets:
        raise _fail(errno.ESRCH)
    return _deliver(targets, signo, p)


def _thread(p: GuestProcess, tid: int) -> GuestProcess | None:
    """The live thread ``tid`` of the run (a single-threaded process is its own thread)."""
    return p.kernel.thread(tid)


def _deliver_to_thread(t: GuestProcess, signo: int, sender: GuestProcess) -> int:
    if signo:
        t.post_to_thread(signo, SigInfo(signo, SI_TKILL, sender.pid, sender.uid))
    return 0


@syscall("tgkill")
def sys_tgkill(p: GuestProcess, tgid: int, tid: int, sig: int, *_: int) -> int:
    if s32(tgid) <= 0 or s32(tid) <= 0:
        raise _fail(errno.EINVAL)
    signo = _signo(sig)
    t = _thread(p, s32(tid))
    if t is None or t.pid != s32(tgid):
        raise _fail(errno.ESRCH)
    return _deliver_to_thread(t, signo, p)


@syscall("tkill")
def sys_tkill(p: GuestProcess, tid: int, sig: int, *_: int) -> int:
    if s32(tid) <= 0:
        raise _fail(errno.EINVAL)
    signo = _signo(sig)
    t = _thread(p, s32(tid))
    if t is None:
        raise _fail(errno.ESRCH)
    return _deliver_to_thread(t, signo, p)


# -------------------------------------------------------- fork and clone


async def _fork(p: GuestProcess, flags: int, newsp: int = 0, ptid: int = 0, ctid: int = 0, tls: int = 0) -> int:
    spawner = p.kernel.spawner
    if spawner is None:
        raise _fail(errno.EAGAIN)  # a process made on its own cannot fork
    if len(p.kernel.procs) >= p.kernel.max_processes or p.kernel.tasks() >= p.kernel.max_tasks:
        raise _fail(errno.EAGAIN)  # as Linux at RLIMIT_NPROC
    vfork = bool(flags & CLONE_VFORK)
    try:
        stub = await spawner.spawn()
    except AioummError as exc:
        log.warning("fork in guest %d: no new stub: %s", p.pid, exc)
        raise _fail(errno.EAGAIN) from exc
    group = p.group if not vfork and p.group is not None and len(p.group.live) > 1 else None
    try:
        if group is not None:
            await group.hold_others(p)  # the copy must not tear: the other threads stand still
        try:
            child = p.fork(stub, share_memory=vfork)
        finally:
            if group is not None:
                group.release()
    except BaseException:
        stub.kill()
        with contextlib.suppress(Exception):
            await stub.wait_exit()
        raise
    child.exit_signal = flags & CSIGNAL
    start_clone(p, child, child.pid, flags, newsp, tls, ptid, ctid)
    if vfork:
        child.vfork_done = asyncio.get_running_loop().create_future()
    p.kernel.start(child)
    if child.vfork_done is not None:
        # The parent's stub stays stopped until the child has let go of its memory.
        await asyncio.shield(child.vfork_done)
    return child.pid


@syscall("fork")
def sys_fork(p: GuestProcess, *_: int) -> Awaitable[int]:
    return _fork(p, signal.SIGCHLD)


@syscall("vfork")
def sys_vfork(p: GuestProcess, *_: int) -> Awaitable[int]:
    return _fork(p, CLONE_VM | CLONE_VFORK | signal.SIGCHLD)


#: What a thread may be made with besides CLONE_VM | CLONE_SIGHAND | CLONE_THREAD.
_THREAD_OFFERED = (
    CLONE_FS
    | CLONE_FILES
    | CLONE_SYSVSEM
    | CLONE_SETTLS
    | CLONE_PARENT_SETTID
    | CLONE_CHILD_CLEARTID
    | CLONE_CHILD_SETTID
    | CLONE_DETACHED
    | CLONE_UNTRACED
    | CLONE_IO
)
_THREAD = CLONE_VM | CLONE_SIGHAND | CLONE_THREAD


@syscall("clone")
def sys_clone(p: GuestProcess, flags: int, newsp: int, ptid: int, ctid: int, tls: int, *_: int) -> Awaitable[int]:
    flags &= 0xFFFFFFFF
    # Linux's own consistency rules first.
    if flags & CLONE_THREAD and not flags & CLONE_SIGHAND:
        raise _fail(errno.EINVAL)
    if flags & CLONE_SIGHAND and not flags & CLONE_VM:
        raise _fail(errno.EINVAL)
    if flags & CLONE_THREAD:
        if (
            flags & CSIGNAL
            or flags & ~(_THREAD | _THREAD_OFFERED)
            or flags & (CLONE_FS | CLONE_FILES) != (CLONE_FS | CLONE_FILES)
        ):
            p.note = "threads with their own descriptors or file system context are not supported by aioumm"
            raise _fail(errno.ENOSYS if not flags & CSIGNAL else errno.EINVAL)
        return clone_thread(p, flags, newsp, ptid, ctid, tls)
    if (flags & CLONE_VM and not flags & CLONE_VFORK) or flags & CLONE_SIGHAND:
        p.note = "processes sharing memory without being threads are not supported by aioumm"
        raise _fail(errno.ENOSYS)
    if flags & ~_CLONE_OFFERED & ~CLONE_VM:
        p.note = "these clone flags are not supported by aioumm"
        raise _fail(errno.ENOSYS if flags & (CLONE_FS | CLONE_FILES | CLONE_PARENT | CLONE_PIDFD) else errno.EINVAL)
    return _fork(p, flags, newsp, ptid, ctid, tls)


# ----------------------------------------------------------------- exec


def _strings(p: GuestProcess, addr: int, budget: list[int]) -> list[bytes]:
    """A NULL-terminated array of strings; ``budget[0]`` counts down the bytes allowed."""
    out: list[bytes] = []
    if addr == 0:
        return out
    while True:
        ptr = p.mm.read_u64(addr + 8 * len(out))
        if ptr == 0:
            return out
        try:
            s = p.mm.read_cstr(ptr, MAX_ARG_STRLEN)
        except SyscallError as exc:
            if exc.errno == errno.ENAMETOOLONG:
                raise _fail(errno.E2BIG) from exc
            raise
        budget[0] -= len(s) + 1 + 8
        if budget[0] < 0 or len(out) >= MAX_ARG_STRINGS:
            raise _fail(errno.E2BIG)
        out.append(s)


def _execve(
    p: GuestProcess, dirfd: int, path_addr: int, argv_addr: int, envp_addr: int, flags: int
) -> int | Awaitable[int]:
    if flags & ~(AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW):
        raise _fail(errno.EINVAL)
    path = _path(p, path_addr) if not (flags & AT_EMPTY_PATH and path_addr == 0) else ""
    named = path  # what the new program's comm and AT_EXECFN come from, as on Linux
    if path in ("/proc/self/exe", f"/proc/{p.pid}/exe", "/proc/thread-self/exe") and p.exe:
        # The host's /proc/self is the controller: a guest re-executing itself (as
        # busybox does for a script without #!) means its own program.
        path = p.exe
    fd = s32(dirfd)
    first: Loc | int
    if not path and flags & AT_EMPTY_PATH:
        # fexecve: the file behind the descriptor (the working directory for AT_FDCWD).
        first = p.vfs.cwd_fd if fd == AT_FDCWD else p.fds.get(fd).host_fd
        filename = f"/dev/fd/{fd}".encode()
    else:
        first = _locate(p, dirfd, path)
        filename = os.fsencode(named if named.startswith("/") or fd == AT_FDCWD else f"/dev/fd/{fd}/{named}")
    # Linux reads both arrays after finding the file and before looking into it.
    budget = [max(p.rlimits[RLIMIT_STACK][0] // 4, ARG_MAX)]
    argv = _strings(p, argv_addr, budget)
    envp = _strings(p, envp_addr, budget)
    plan = prepare_exec(
        p.vfs,
        lambda name: _locate(p, AT_FDCWD, name),
        first,
        filename,
        argv,
        nofollow=bool(flags & AT_SYMLINK_NOFOLLOW),
    )
    group = p.group
    if group is not None and len(group.live) > 1:
        return _execve_alone(p, plan, envp)
    try:
        p.execve(plan, envp)
    finally:
        plan.close()
    return 0


async def _execve_alone(p: GuestProcess, plan: ExecPlan, envp: list[bytes]) -> int:
    """``execve`` in a thread of a process that has others: they end first, then it execs."""
    try:
        assert p.group is not None
        await p.group.end_others(p)
        p.execve(plan, envp)
    finally:
        plan.close()
    return 0


@syscall("execve")
def sys_execve(p: GuestProcess, path: int, argv: int, envp: int, *_: int) -> int | Awaitable[int]:
    return _execve(p, AT_FDCWD & 0xFFFFFFFF, path, argv, envp, 0)


@syscall("execveat")
def sys_execveat(
    p: GuestProcess, dirfd: int, path: int, argv: int, envp: int, flags: int, *_: int
) -> int | Awaitable[int]:
    return _execve(p, dirfd, path, argv, envp, flags & 0xFFFFFFFF)


# ----------------------------------------------------------------- wait


def _selects(p: GuestProcess, child: GuestProcess, idtype: int, ident: int, options: int) -> bool:
    if idtype == P_PID and child.pid != ident:
        return False
    if idtype == P_PGID and child.pgid != ident:
        return False
    if options & __WALL:
        return True
    # A child that sends its parent no SIGCHLD is a "clone" child: only __WCLONE waits for it.
    clone_child = child.exit_signal != signal.SIGCHLD
    return clone_child == bool(options & __WCLONE)


#: What ``wait`` found about a child: it exited, stopped or was continued.
EXITED, STOPPED, CONTINUED = "exited", "stopped", "continued"


def _child_event(child: GuestProcess, options: int) -> str | None:
    # Linux's order (wait_consider_task): a zombie's exit, then a stop, then a resume.
    if child.status is not None:
        return EXITED if options & WEXITED else None
    if options & WSTOPPED and child.stopped and child.stop_report:
        return STOPPED
    if options & WCONTINUED and child.cont_report:
        return CONTINUED
    return None


async def _wait_for_child(p: GuestProcess, idtype: int, ident: int, options: int) -> tuple[GuestProcess, str] | None:
    """The first child that matches and has something to report (its exit, a stop
    or a resume, as ``options`` ask); None with WNOHANG when none has yet."""
    while True:
        kids = [c for pid, c in sorted(p.children.items()) if _selects(p, c, idtype, ident, options)]
        if not kids:
            raise _fail(errno.ECHILD)
        for c in kids:
            event = _child_event(c, options)
            if event is not None:
                return c, event
        if options & WNOHANG:
            return None
        await p.child_event()


def _consume(p: GuestProcess, child: GuestProcess, event: str, options: int) -> None:
    """The report was made: an exit reaps the child, a stop or a resume is reported once."""
    if options & WNOWAIT:
        return
    if event == EXITED:
        p.kernel.reap(child)
    elif event == STOPPED:
        child.stop_report = 0
    else:
        child.cont_report = False


def _wait_target(p: GuestProcess, pid: int) -> tuple[int, int]:
    if pid == -1:
        return P_ALL, 0
    if pid == 0:
        return P_PGID, p.pgid
    if pid < 0:
        return P_PGID, -pid
    return P_PID, pid


@syscall("wait4")
def sys_wait4(p: GuestProcess, pid: int, wstatus: int, options: int, rusage: int, *_: int) -> Awaitable[int]:
    options &= 0xFFFFFFFF
    if options & ~_WAIT4_OPTIONS:
        raise _fail(errno.EINVAL)
    who = s32(pid)
    if who == INT_MIN:
        raise _fail(errno.ESRCH)
    idtype, ident = _wait_target(p, who)

    async def wait() -> int:
        found = await _wait_for_child(p, idtype, ident, options | WEXITED)
        if found is None:
            return 0
        child, event = found
        if event == EXITED:
            status = child.status or 0
        elif event == STOPPED:
            status = 0x7F | child.stop_report << 8
        else:
            status = 0xFFFF
        # Reaped first, then reported: a bad pointer is EFAULT, and the child is gone all the same.
        _consume(p, child, event, options)
        if wstatus:
            p.mm.write(wstatus, struct.pack("<i", status))
        if rusage:
            p.mm.write(rusage, bytes(_RUSAGE_SIZE))
        return child.pid

    return wait()


@syscall("waitid")
def sys_waitid(
    p: GuestProcess, idtype: int, ident: int, infop: int, options: int, rusage: int, *_: int
) -> Awaitable[int]:
    options &= 0xFFFFFFFF
    idtype = s32(idtype)
    if options & ~_WAITID_OPTIONS or not options & (WEXITED | WSTOPPED | WCONTINUED):
        raise _fail(errno.EINVAL)
    if idtype == P_PIDFD:
        raise _fail(errno.EBADF if s32(ident) >= 0 else errno.EINVAL)  # no guest holds a pidfd
    if idtype == P_PGID:
        group = s32(ident) or p.pgid
        if s32(ident) < 0:
            raise _fail(errno.EINVAL)
        ident = group
    elif idtype == P_PID:
        if s32(ident) <= 0:
            raise _fail(errno.EINVAL)
        ident = s32(ident)
    elif idtype != P_ALL:
        raise _fail(errno.EINVAL)

    async def wait() -> int:
        found = await _wait_for_child(p, idtype, ident, options)
        if found is None:
            if infop:
                p.mm.write(infop, bytes(_SIGINFO_SIZE))
            return 0
        child, event = found
        if event == EXITED:
            st = child.status or 0
            code, value = (CLD_KILLED, st & 0x7F) if st & 0x7F else (CLD_EXITED, (st >> 8) & 0xFF)
            if st & 0x80:
                code = CLD_DUMPED
        elif event == STOPPED:
            code, value = CLD_STOPPED, child.stop_report
        else:
            code, value = CLD_CONTINUED, int(signal.SIGCONT)
        _consume(p, child, event, options)  # before the copy out, as in wait4
        if infop:
            info = struct.pack("<iiiiiIi4xqq", signal.SIGCHLD, 0, code, 0, child.pid, child.uid, value, 0, 0)
            p.mm.write(infop, info.ljust(_SIGINFO_SIZE, b"\0"))
        if rusage:
            p.mm.write(rusage, bytes(_RUSAGE_SIZE))
        return 0

    return wait()


UNINTERRUPTIBLE.update(NUMBERS[n] for n in ("fork", "vfork", "clone", "execve", "execveat"))


# ------------------------------------------------- personality, priorities


@syscall("personality")
def sys_personality(p: GuestProcess, persona: int, *_: int) -> int:
    old = p.personality
    if persona & 0xFFFFFFFF != 0xFFFFFFFF:  # 0xffffffff only asks
        p.personality = persona & 0xFFFFFFFF
    return old


PRIO_PROCESS = 0
PRIO_PGRP = 1
PRIO_USER = 2


def _prio_targets(p: GuestProcess, which: int, who: int) -> list[GuestProcess]:
    """The processes ``getpriority``/``setpriority`` (and the ``ioprio`` calls) name."""
    who = s32(who)
    if which == PRIO_PROCESS:
        q = p if who == 0 else p.kernel.get(who) if who > 0 else None
        found = [q] if q is not None and q.status is None else []
    elif which == PRIO_PGRP:
        found = [q for q in p.kernel.group(who or p.pgid) if q.status is None] if who >= 0 else []
    elif which == PRIO_USER:
        uid = p.uid if who == 0 else who & 0xFFFFFFFF
        found = [q for q in p.kernel.all() if q.status is None and q.uid == uid]
    else:
        raise _fail(errno.EINVAL)
    if not found:
        raise _fail(errno.ESRCH)
    return found


@syscall("getpriority")
def sys_getpriority(p: GuestProcess, which: int, who: int, *_: int) -> int:
    """The highest priority of the targets, as ``20 - nice`` (the raw call's 1..40)."""
    return max(20 - q.nice for q in _prio_targets(p, s32(which), who))


@syscall("setpriority")
def sys_setpriority(p: GuestProcess, which: int, who: int, prio: int, *_: int) -> int:
    """Kept for ``getpriority`` to report; the stubs' host priority does not change."""
    nice = min(max(s32(prio), -20), 19)
    for q in _prio_targets(p, s32(which), who):
        if p.euid != 0 and p.euid not in (q.uid, q.euid):
            raise _fail(errno.EPERM)
        if p.euid != 0 and nice < q.nice:
            raise _fail(errno.EACCES)
        q.nice = nice
    return 0


IOPRIO_CLASS_NONE = 0
IOPRIO_CLASS_RT = 1
IOPRIO_CLASS_BE = 2
IOPRIO_CLASS_IDLE = 3


@syscall("ioprio_get")
def sys_ioprio_get(p: GuestProcess, which: int, who: int, *_: int) -> int:
    # IOPRIO_WHO_PROCESS, _PGRP and _USER are PRIO_* + 1.
    return _prio_targets(p, s32(which) - 1, who)[0].ioprio


@syscall("ioprio_set")
def sys_ioprio_set(p: GuestProcess, which: int, who: int, ioprio: int, *_: int) -> int:
    """Kept for ``ioprio_get`` to report; nothing is scheduled differently."""
    ioprio = s32(ioprio)
    # 3 bits of class, then 10 bits of hints and 3 of level (what Linux checks).
    cls, level = (ioprio >> 13) & 0x7, ioprio & 0x7
    if ioprio < 0 or ioprio >> 16:
        raise _fail(errno.EINVAL)
    if cls == IOPRIO_CLASS_RT and p.euid != 0:
        raise _fail(errno.EPERM)
    if cls == IOPRIO_CLASS_NONE and level:
        raise _fail(errno.EINVAL)
    if cls not in (IOPRIO_CLASS_NONE, IOPRIO_CLASS_RT, IOPRIO_CLASS_BE, IOPRIO_CLASS_IDLE):
        raise _fail(errno.EINVAL)
    for q in _prio_targets(p, s32(which) - 1, who):
        q.ioprio = ioprio
    return 0


# ---------------------------------------------------------------- unshare

CLONE_NEWTIME = 0x80
CLONE_NEWNS = 0x20000
_NAMESPACES = CLONE_NEWTIME | CLONE_NEWNS | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000
#: What unsharing means nothing for a process that shares nothing.
_UNSHARED_ALREADY = CLONE_FILES | CLONE_FS | CLONE_SYSVSEM | CLONE_VM | CLONE_SIGHAND | CLONE_THREAD


@syscall("unshare")
def sys_unshare(p: GuestProcess, flags: int, *_: int) -> int:
    flags &= 0xFFFFFFFF
    if flags & ~(_NAMESPACES | _UNSHARED_ALREADY):
        raise _fail(errno.EINVAL)
    if flags & _NAMESPACES:
        p.note = "namespaces are not supported by aioumm"
        raise _fail(errno.EPERM)
    return 0

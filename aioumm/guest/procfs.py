"""The guest's ``/proc``: the processes of its run, their descriptors and memory.

Path lookups happen in the controller, and the host's ``/proc`` describes host
processes: the controller (whose descriptors and memory hold every guest) and
the stubs (whose pid, descriptors and mappings are not what the guest knows).
So the parts of ``/proc`` that describe processes are made here, from the run's
own records (:class:`~aioumm.guest.kernel.ProcessTable`, each guest's
descriptor table, address space and signal state):

* ``/proc`` lists the host's entries without any host process, and the pids of
  the run's guests (zombies too), so ``ps``, ``pidof`` and ``pkill`` see guests;
* ``/proc/self`` and ``/proc/thread-self`` are links to the guest's own pid;
* ``/proc/PID`` of a guest: ``stat``, ``status``, ``statm``, ``maps``,
  ``cmdline``, ``comm`` and ``environ`` are written here; ``fd/`` and
  ``fdinfo/`` list the guest's own descriptor numbers; ``exe``, ``cwd``,
  ``root`` and ``fd/N`` are links naming what the guest sees (a path inside its
  root, ``pipe:[inode]``...), and opening one opens that, never a host magic
  link; ``task/`` lists the process's threads, and ``task/TID`` shows its process's files.  Any other
  entry of the guest's *own* pid is its stub's (``mem``, ``mounts``, ``net``,
  ``limits``...); of another guest's, it is refused (``EACCES``);
* any other pid is no process (``ENOENT``).

A guest confined to a root sees this only where its root has a procfs at
``/proc``, as on Linux.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import SyscallError
from .files import DT_DIR, DT_LNK, DT_REG, Loc, OpenFile, _DirEntry, _mode_dtype
from .memory import PROT_EXEC, PROT_READ, PROT_WRITE, FileBacking
from .signals import SIG_DFL, SIG_IGN, sigbit

if TYPE_CHECKING:
    from .process import GuestProcess

__all__ = ["ProcDir", "ProcDirFile", "ProcFile", "ProcLink", "Redirect", "resolve"]

_PROC_DEV = os.stat("/proc").st_dev
_PAGE = os.sysconf("SC_PAGE_SIZE")
#: Entries of ``/proc/PID`` made here; the rest of the guest's own pid is its stub's.
#: The task flag for "used root privileges": the stub's set-up sets it, the guest did not.
_PF_SUPERPRIV = 0x100
_FILES = ("cmdline", "comm", "environ", "maps", "stat", "statm", "status")
_LINKS = ("cwd", "exe", "root")
_DIRS = ("fd", "fdinfo", "task")


@dataclass(frozen=True)
class ProcFile:
    """A file whose contents are made here (read-only)."""

    path: str
    contents: bytes
    #: A host file to take the metadata (mode, owner) from.
    like: str


@dataclass(frozen=True)
class ProcLink:
    """A symbolic link: ``target`` is what ``readlink`` shows."""

    path: str
    target: str
    #: The mode ``lstat`` shows (``fd/N`` carries the access mode).
    mode: int
    #: Where following it leads: a guest descriptor's open file...
    file: OpenFile | None = None
    #: ...or a guest path.
    dest: str | None = None


@dataclass(frozen=True)
class ProcDir:
    """A directory whose entries are made here, read when the guest lists it."""

    path: str
    #: A host directory with the right metadata (and nothing the guest may reach through it).
    host: str
    entries: Callable[[], list[_DirEntry]]


@dataclass(frozen=True)
class Redirect:
    """Not made here: the guest path to look up instead (an entry of the guest's own
    stub, or what lies beyond a link such as ``cwd/..``)."""

    path: str


Node = ProcFile | ProcLink | ProcDir | Redirect


class ProcDirFile(OpenFile):
    """An open :class:`ProcDir`: a host directory (for ``fstat``) listing made-up entries."""

    def __init__(self, host_fd: int, node: ProcDir, *, flags: int = 0) -> None:
        super().__init__(host_fd, node.path, flags=flags)
        self._node = node

    def _listing(self) -> list[_DirEntry]:
        if self._dir is None:
            self._dir = self._node.entries()
        return self._dir


def _guest_proc_mounted(p: GuestProcess) -> bool:
    if not p.vfs.confined:
        return True
    try:
        return p.vfs.stat(Loc(p.vfs.root_fd, "/proc")).st_dev == _PROC_DEV
    except OSError:
        return False


def _fail(err: int) -> SyscallError:
    return SyscallError(err)


def resolve(p: GuestProcess, path: str) -> Node | None:
    """What the absolute guest ``path`` is in the guest's ``/proc``; None if it is not made here.

    Raises :class:`SyscallError` for a pid that is no guest's (``ENOENT``), an
    entry of another guest that is not made here (``EACCES``) and the like.
    """
    parts = [c for c in path.split("/") if c and c != "."]
    if parts[:1] != ["proc"] or not _guest_proc_mounted(p):
        return None
    if ".." in parts:
        # Only links lead out of /proc, and those are followed below with their rest intact.
        link = next(
            (i for i, c in enumerate(parts) if c in _LINKS or (parts[i - 1] == "fd" and c.isdigit())), len(parts)
        )
        head = [c for c in posixpath.normpath("/" + "/".join(parts[:link])).split("/") if c]
        if head[:1] != ["proc"]:
            return None
        parts = head + parts[link:]
    # A trailing slash (or "/.") follows a final link.
    beyond = [""] if path.endswith(("/", "/.")) else []
    return _resolve(p, parts[1:], beyond)


def _resolve(p: GuestProcess, rest: list[str], beyond: list[str]) -> Node | None:
    if not rest:
        return ProcDir("/proc", "/proc", lambda: _proc_root_entries(p))
    head, pid = rest[0], str(p.pid)
    if head == "self":
        if len(rest) == 1 and not beyond:
            return ProcLink("/proc/self", pid, stat.S_IFLNK | 0o777, dest=f"/proc/{pid}")
        rest = [pid, *rest[1:]]
    elif head == "thread-self":
        if len(rest) == 1 and not beyond:
            tid = str(p.tid)
            return ProcLink("/proc/thread-self", f"{pid}/task/{tid}", stat.S_IFLNK | 0o777, dest=f"/proc/{pid}")
        rest = [pid, "task", str(p.tid), *rest[1:]]
    elif head == "sysvipc" and len(rest) == 2 and rest[1] in _SYSVIPC and not beyond:
        # The run's IPC namespace, never the host's objects.
        return ProcFile(f"/proc/sysvipc/{rest[1]}", _sysvipc(p, rest[1]), f"/proc/sysvipc/{rest[1]}")
    elif not head.isdigit():
        return None  # cpuinfo, meminfo, sys...: the host's
    # A thread's tid opens too, as on Linux (but is not listed in /proc).
    q = p.kernel.get(int(rest[0])) or p.kernel.thread(int(rest[0])) if rest[0] == str(int(rest[0])) else None
    if q is None:
        raise _fail(errno.ENOENT)
    rest = rest[1:]
    if rest[:1] == ["task"]:
        if len(rest) == 1:
            return ProcDir(f"/proc/{q.pid}/task", _host_dir(q), lambda: _task_entries(q))
        if rest[1] not in {str(tid) for tid in _tids(q)}:
            raise _fail(errno.ENOENT)
        rest = rest[2:]
    return _pid_entry(p, q, rest, beyond)


def _tids(q: GuestProcess) -> list[int]:
    """The process's live threads (a thread's entry shows its process's files)."""
    return sorted(q.group.live) if q.group is not None and q.group.live else [q.pid]


def _task_entries(q: GuestProcess) -> list[_DirEntry]:
    names = [b".", b"..", *(str(tid).encode() for tid in _tids(q))]
    return [_DirEntry(_inode(q.pid, 3000 + n), DT_DIR, name) for n, name in enumerate(names)]


def _proc_root_entries(p: GuestProcess) -> list[_DirEntry]:
    entries = [_DirEntry(os.stat("/proc").st_ino, DT_DIR, b"."), _DirEntry(2, DT_DIR, b"..")]
    with os.scandir("/proc") as it:
        for e in it:
            if e.name.isdigit():
                continue  # a host process: not the guest's to see
            try:
                dtype = _mode_dtype(e.stat(follow_symlinks=False).st_mode)
            except OSError:
                continue
            entries.append(_DirEntry(e.inode(), dtype, os.fsencode(e.name)))
    for q in p.kernel.all():
        entries.append(_DirEntry(_inode(q.pid), DT_DIR, str(q.pid).encode()))
    return entries


def _inode(pid: int, n: int = 0) -> int:
    # Stable inode numbers for made-up entries (none may be 0: readdir skips those).
    return (pid << 16) | (n + 1)


def _host_dir(q: GuestProcess) -> str:
    """A host directory standing in for ``/proc/PID``: the stub's while it lives."""
    if q.status is None and os.path.isdir(f"/proc/{q.host_pid}"):
        return f"/proc/{q.host_pid}"
    return "/proc/self"  # a zombie's stub is gone: only the metadata of this one is used


def _pid_entry(p: GuestProcess, q: GuestProcess, rest: list[str], beyond: list[str]) -> Node:
    base = f"/proc/{q.pid}"
    if not rest:
        return ProcDir(base, _host_dir(q), lambda: _pid_entries(q))
    name = rest[0]
    like = f"{_host_dir(q)}/stat"
    if name in _FILES:
        if len(rest) > 1:
            raise _fail(errno.ENOTDIR)
        return ProcFile(f"{base}/{name}", _contents(p, q, name), like)
    if name in _LINKS:
        if q.status is not None:
            raise _fail(errno.ENOENT)  # a zombie has none of these
        target = {"exe": q.exe, "cwd": q.vfs.cwd, "root": "/"}[name]
        if len(rest) > 1 or beyond:
            return Redirect("/".join([target.rstrip("/"), *rest[1:], *beyond]) or "/")
        return ProcLink(f"{base}/{name}", target, stat.S_IFLNK | 0o777, dest=target)
    if name in ("fd", "fdinfo"):
        if q.status is not None:
            raise _fail(errno.ENOENT)
        if len(rest) == 1:
            kind = DT_LNK if name == "fd" else DT_REG
            return ProcDir(f"{base}/{name}", _host_dir(q), lambda: _fd_entries(q, kind))
        if not rest[1].isdigit() or rest[1] != str(int(rest[1])) or int(rest[1]) not in q.fds:
            raise _fail(errno.ENOENT)
        if len(rest) > 2 or beyond:
            raise _fail(errno.ENOTDIR)  # what lies beyond a descriptor's link: not followed here
        n = int(rest[1])
        file = q.fds.get(n)
        if name == "fdinfo":
            return ProcFile(f"{base}/fdinfo/{n}", _fdinfo(q, n), like)
        return ProcLink(f"{base}/fd/{n}", fd_target(q, file), _fd_link_mode(file), file=file)
    if q is p and q.status is None:
        return Redirect(f"/proc/{q.host_pid}/" + "/".join(rest))
    raise _fail(errno.EACCES if q.status is None else errno.ENOENT)


def _pid_entries(q: GuestProcess) -> list[_DirEntry]:
    entries = [_DirEntry(_inode(q.pid), DT_DIR, b"."), _DirEntry(_PROC_DEV_INO, DT_DIR, b"..")]
    with os.scandir("/proc/self") as it:  # the names every process has
        for n, e in enumerate(it):
            dtype = DT_DIR if e.is_dir(follow_symlinks=False) else DT_LNK if e.is_symlink() else DT_REG
            entries.append(_DirEntry(_inode(q.pid, n + 1), dtype, os.fsencode(e.name)))
    return entries


_PROC_DEV_INO = os.stat("/proc").st_ino


def _fd_entries(q: GuestProcess, dtype: int) -> list[_DirEntry]:
    entries = [_DirEntry(_inode(q.pid, 1000), DT_DIR, b"."), _DirEntry(_inode(q.pid), DT_DIR, b"..")]
    if q.status is None:
        entries += [_DirEntry(_inode(q.pid, 2000 + fd), dtype, str(fd).encode()) for fd in q.fds]
    return entries


def _fd_link_mode(file: OpenFile) -> int:
    # Linux: read access gives r-x, write access -wx, for the owner only.
    acc = file.flags & os.O_ACCMODE
    mode = stat.S_IFLNK
    if file.flags & os.O_PATH:
        return mode
    if acc in (os.O_RDONLY, os.O_RDWR):
        mode |= 0o500
    if acc in (os.O_WRONLY, os.O_RDWR):
        mode |= 0o300
    return mode


def fd_target(q: GuestProcess, file: OpenFile) -> str:
    """What ``readlink("/proc/PID/fd/N")`` shows for ``file`` as guest ``q`` sees it."""
    try:
        host = os.readlink(f"/proc/self/fd/{file.host_fd}")
    except OSError:
        return file.path
    if host.startswith("/memfd:aioumm-proc"):
        return file.path  # a file made here: named by the path it was opened as
    if not host.startswith("/"):
        return host  # pipe:[N], socket:[N], anon_inode:...
    deleted = host.endswith(" (deleted)")
    bare = host[: -len(" (deleted)")] if deleted else host
    guest = q.vfs.guest_path_of_host(bare)
    if guest is None:
        return host  # outside the guest's root: Linux names it from the real root
    return guest + (" (deleted)" if deleted else "")


# ------------------------------------------------------------------ contents

_SYSVIPC = {
    "shm": "       key      shmid perms                  size  cpid  lpid nattch   uid   gid  cuid  cgid"
    "      atime      dtime      ctime                   rss                  swap\n",
    "sem": "       key      semid perms      nsems   uid   gid  cuid  cgid      otime      ctime\n",
    "msg": "       key      msqid perms      cbytes       qnum lspid lrpid   uid   gid  cuid  cgid"
    "      stime      rtime      ctime\n",
}


def _sysvipc(p: GuestProcess, kind: str) -> bytes:
    """``/proc/sysvipc/{shm,sem,msg}`` of the run's namespace, in Linux's format (index order)."""
    from .ipc import MsgQueue, SemSet, ShmSegment  # imported when first needed, as by the kernel

    ns = p.kernel.ipc
    ids = {"shm": ns.shm, "sem": ns.sem, "msg": ns.msg}[kind]
    lines = [_SYSVIPC[kind]]
    for _, o in sorted(ids.objs.items()):
        head = f"{o.key:10d} {o.id:10d}  {o.mode & 0o7777:4o} "
        owners = f"{o.uid:5d} {o.gid:5d} {o.cuid:5d} {o.cgid:5d}"
        if isinstance(o, ShmSegment):
            backing = o.backing
            rss = 0
            if backing is not None and backing.fd >= 0:
                with contextlib.suppress(OSError):
                    rss = os.fstat(backing.fd).st_blocks * 512
            lines.append(
                f"{head}{o.size:21d} {o.cpid:5d} {o.lpid:5d}  {o.nattch:5d} {owners}"
                f" {o.atime:10d} {o.dtime:10d} {o.ctime:10d} {rss:21d} {0:21d}\n"
            )
        elif isinstance(o, SemSet):
            lines.append(f"{head}{len(o.values):10d} {owners} {o.otime:10d} {o.ctime:10d}\n")
        elif isinstance(o, MsgQueue):
            lines.append(
                f"{head} {o.cbytes:10d} {len(o.messages):10d} {o.lspid:5d} {o.lrpid:5d} {owners}"
                f" {o.stime:10d} {o.rtime:10d} {o.ctime:10d}\n"
            )
    return "".join(lines).encode()


def _contents(p: GuestProcess, q: GuestProcess, name: str) -> bytes:
    if name == "cmdline":
        return q.cmdline
    if name == "environ":
        return q.environ
    if name == "comm":
        return q.comm + b"\n"
    if name == "stat":
        return _stat(p, q)
    if name == "status":
        return _status(p, q)
    if name == "statm":
        return _statm(q)
    return _maps(q)


def _state(p: GuestProcess, q: GuestProcess) -> tuple[str, str]:
    if q.status is not None:
        return "Z", "zombie"
    if q.stopped:
        return "T", "stopped"  # job control: stopped until SIGCONT
    if q is p or q.running_code:
        return "R", "running"  # the reader itself, or a guest running its own code
    return "S", "sleeping"  # waiting in a syscall (a pipe, a child, a sleep)


def _read_host(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except OSError:
        return None


@dataclass(frozen=True)
class _Mem:
    size: int
    data: int
    stack: int
    exe: int


def _mem(q: GuestProcess) -> _Mem:
    size = data = stack = exe = 0
    for v in q.mm.vmas:
        size += v.length
        if v.name == "[stack]":
            stack += v.length
        elif v.prot & PROT_EXEC:
            exe += v.length
        elif v.prot & PROT_WRITE and not v.shared:
            data += v.length
    return _Mem(size, data, stack, exe)


def _masks(q: GuestProcess) -> tuple[int, int, int, int]:
    """Pending, blocked, ignored and caught signals, as bit masks."""
    s = q.signals
    ignored = caught = 0
    for sig in range(1, 65):
        handler = s.action(sig).handler
        if handler == SIG_IGN:
            ignored |= sigbit(sig)
        elif handler != SIG_DFL:
            caught |= sigbit(sig)
    return s.pending, s.blocked, ignored, caught


def _stat(p: GuestProcess, q: GuestProcess) -> bytes:
    host = _read_host(f"/proc/{q.host_pid}/stat") if q.status is None else None
    # The host line's fields after "(comm)": CPU times, start time, faults... of the stub.
    fields = host[host.rindex(")") + 2 :].split() if host else ["0"] * 50
    state, _ = _state(p, q)
    pending, blocked, ignored, caught = _masks(q)
    mem = _mem(q) if q.status is None else _Mem(0, 0, 0, 0)
    mm = q.mm
    stack_start = max((v.end for v in mm.vmas if v.name == "[stack]"), default=0) if q.status is None else 0
    code = [v for v in mm.vmas if v.prot & PROT_EXEC and v.name.startswith("/")] if q.status is None else []
    set_ = {
        0: state,
        1: str(q.ppid),
        2: str(q.pgid),
        3: str(q.sid),
        15: str(20 + q.nice),
        16: str(q.nice),
        17: "1",
        20: str(mem.size),
        23: str(min((v.start for v in code), default=0)),
        24: str(max((v.end for v in code), default=0)),
        25: str(stack_start),
        26: "0",
        27: "0",
        28: str(pending & 0x7FFFFFFF),
        29: str(blocked & 0x7FFFFFFF),
        30: str(ignored & 0x7FFFFFFF),
        31: str(caught & 0x7FFFFFFF),
        35: str(q.exit_signal),
        42: "0",  # start_data, end_data, arg and env ranges: not recorded
        43: "0",
        44: str(mm.brk_start) if q.status is None else "0",
        45: "0",
        46: "0",
        47: "0",
        48: "0",
        49: str(q.status & 0xFFFF) if q.status is not None else "0",
    }
    if q.status is not None:
        fields[21] = "0"  # rss
    if fields[6].isdigit():
        fields[6] = str(int(fields[6]) & ~_PF_SUPERPRIV)  # the stub's seccomp set-up, not the guest's
    for i, v in set_.items():
        if i < len(fields):
            fields[i] = v
    comm = q.comm.decode("utf-8", "replace")
    return f"{q.pid} ({comm}) {' '.join(fields)}\n".encode()


def _status(p: GuestProcess, q: GuestProcess) -> bytes:
    host = _read_host(f"/proc/{q.host_pid}/status") if q.status is None else None
    template = host if host is not None else (_read_host("/proc/self/status") or "")
    state, word = _state(p, q)
    pending, blocked, ignored, caught = _masks(q)
    values: dict[str, str] = {
        "Name": q.comm.decode("utf-8", "replace"),
        "Umask": f"{q.vfs.umask:04o}" if q.status is None else "",
        "State": f"{state} ({word})",
        "Tgid": str(q.pid),
        "Pid": str(q.tid),
        "PPid": str(q.ppid),
        "TracerPid": "0",
        "Uid": "\t".join([str(q.uid), str(q.euid), str(q.euid), str(q.euid)]),
        "Gid": "\t".join([str(q.gid), str(q.egid), str(q.egid), str(q.egid)]),
        "NStgid": str(q.pid),
        "NSpid": str(q.pid),
        "NSpgid": str(q.pgid),
        "NSsid": str(q.sid),
        "Threads": str(len(_tids(q))),
        "SigPnd": f"{pending:016x}",
        "ShdPnd": f"{pending:016x}",
        "SigBlk": f"{blocked:016x}",
        "SigIgn": f"{ignored:016x}",
        "SigCgt": f"{caught:016x}",
        "NoNewPrivs": str(int(q.no_new_privs)),
        "Seccomp": "0",  # the stub's filter is not the guest's
        "Seccomp_filters": "0",
    }
    if q.status is None:
        mem = _mem(q)
        values.update(
            VmPeak=_kb(mem.size),
            VmSize=_kb(mem.size),
            VmData=_kb(mem.data),
            VmStk=_kb(mem.stack),
            VmExe=_kb(mem.exe),
            VmLib=_kb(0),
        )
    out: list[str] = []
    for line in template.splitlines():
        key, sep, _ = line.partition(":")
        if not sep:
            continue
        if q.status is not None and (key.startswith(("Vm", "Rss")) or key in ("Umask", "HugetlbPages")):
            continue  # a zombie has no memory
        out.append(f"{key}:\t{values[key]}" if key in values else line)
    return ("\n".join(out) + "\n").encode()


def _kb(n: int) -> str:
    return f"{n // 1024:8d} kB"


def _statm(q: GuestProcess) -> bytes:
    if q.status is not None:
        return b"0 0 0 0 0 0 0\n"
    host = (_read_host(f"/proc/{q.host_pid}/statm") or "0 0 0 0 0 0 0").split()
    mem = _mem(q)
    # size and data from the guest's mappings; resident and shared pages are the stub's.
    host[0] = str(mem.size // _PAGE)
    host[3] = str(mem.exe // _PAGE)
    host[5] = str((mem.data + mem.stack) // _PAGE)
    return (" ".join(host) + "\n").encode()


def _maps(q: GuestProcess) -> bytes:
    if q.status is not None:
        return b""
    lines = []
    for v in q.mm.vmas:
        perms = (
            ("r" if v.prot & PROT_READ else "-")
            + ("w" if v.prot & PROT_WRITE else "-")
            + ("x" if v.prot & PROT_EXEC else "-")
            + ("s" if v.shared else "p")
        )
        dev = ino = offset = 0
        name = v.name
        if isinstance(v.backing, FileBacking):
            with contextlib.suppress(OSError):
                host = os.readlink(f"/proc/self/fd/{v.backing.fd}")
                name = q.vfs.guest_path_of_host(host) or host
        if name.startswith("/"):
            try:
                st = os.fstat(v.backing.fd) if isinstance(v.backing, FileBacking) else q.vfs.stat(q.vfs.locate(name))
                dev, ino = st.st_dev, st.st_ino
            except OSError:
                pass
            if isinstance(v.backing, FileBacking):
                offset = v.offset
        head = f"{v.start:08x}-{v.end:08x} {perms} {offset:08x} {os.major(dev):02x}:{os.minor(dev):02x} {ino} "
        lines.append(head.ljust(73) + name if name else head)
    host = _read_host(f"/proc/{q.host_pid}/maps") or ""
    # The kernel's own pages of the stub's address space (vsyscall) are the guest's too.
    lines += [line for line in host.splitlines() if line.endswith("[vsyscall]")]
    return ("\n".join(lines) + "\n").encode() if lines else b""


def _fdinfo(q: GuestProcess, n: int) -> bytes:
    file = q.fds.get(n)
    host = _read_host(f"/proc/self/fdinfo/{file.host_fd}") or "pos:\t0\nflags:\t0\n"
    flags = file.status_flags() | (os.O_CLOEXEC if q.fds.cloexec(n) else 0)
    out = [f"flags:\t0{flags:o}" if line.startswith("flags:") else line for line in host.splitlines()]
    return ("\n".join(out) + "\n").encode()


# ------------------------------------------------------------------- metadata


def stat_of(node: ProcFile | ProcDir | ProcLink) -> os.stat_result:
    """``lstat`` of a node made here."""
    if isinstance(node, ProcDir):
        return os.stat(node.host)
    st = os.stat(node.like) if isinstance(node, ProcFile) else os.lstat("/proc/self")
    mode = node.mode if isinstance(node, ProcLink) else st.st_mode
    size = 64 if isinstance(node, ProcLink) and node.file is not None else 0
    now = time.time_ns()
    return os.stat_result(
        (mode, st.st_ino, st.st_dev, 1, st.st_uid, st.st_gid, size, now // 10**9, now // 10**9, now // 10**9),
        {"st_atime_ns": now, "st_mtime_ns": now, "st_ctime_ns": now, "st_blksize": 1024, "st_blocks": 0, "st_rdev": 0},
    )

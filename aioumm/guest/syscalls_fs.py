"""File calls beyond open, read and write: links, times, owners, special files, space, chroot.

Registered with the rest of the handlers (:mod:`.syscalls` imports this module).

A call that follows a symlink in the last component of its path opens the path
first (``O_PATH``, looked up as every guest lookup is: inside the root, no magic
links) and then acts on ``/proc/self/fd/N`` of that descriptor, so a confined
guest's symlink can never lead the host call outside its root.  A call that does
not follow acts on the name in its parent directory.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import struct
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import SyscallError
from .files import host_syscall
from .process import GuestProcess
from .syscalls import (
    AT_EMPTY_PATH,
    AT_FDCWD,
    AT_SYMLINK_FOLLOW,
    AT_SYMLINK_NOFOLLOW,
    _locate,
    _path,
    s32,
    s64,
    syscall,
)
from .table import NUMBERS

__all__: list[str] = []

UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2
_TIMESPECS = struct.Struct("<qqqq")  # two timespecs (or two timevals): seconds, fraction
_UTIMBUF = struct.Struct("<qq")
_STATFS_SIZE = 120
_CWD = AT_FDCWD & 0xFFFFFFFF


def _fail(err: int) -> SyscallError:
    return SyscallError(err)


def _fd_path(host_fd: int) -> str:
    return f"/proc/self/fd/{host_fd}"


@contextmanager
def _node(p: GuestProcess, dirfd: int, path: str, flags: int) -> Iterator[tuple[int | None, str, bool]]:
    """``(dir_fd, name, follow_symlinks)`` for a host call on the file a ``*at`` call names.

    ``flags`` may hold ``AT_SYMLINK_NOFOLLOW`` and ``AT_EMPTY_PATH`` (an empty
    path then names ``dirfd`` itself).
    """
    if not path and flags & AT_EMPTY_PATH:
        fd = s32(dirfd)
        yield None, _fd_path(p.vfs.cwd_fd if fd == AT_FDCWD else p.fds.get(fd).host_fd), True
        return
    loc = _locate(p, dirfd, path)
    if flags & AT_SYMLINK_NOFOLLOW:
        with p.vfs.at(loc) as (dfd, name):
            yield dfd, name, False
        return
    fd = p.vfs.open(loc, os.O_PATH)
    try:
        yield None, _fd_path(fd), True
    finally:
        os.close(fd)


# ------------------------------------------------------------------ links


@syscall("symlinkat")
def sys_symlinkat(p: GuestProcess, target: int, dirfd: int, path: int, *_: int) -> int:
    dest = _path(p, target)
    if not dest:
        raise _fail(errno.ENOENT)
    with p.vfs.at(_locate(p, dirfd, _path(p, path))) as (dfd, name):
        os.symlink(dest, name, dir_fd=dfd)
    return 0


@syscall("symlink")
def sys_symlink(p: GuestProcess, target: int, path: int, *_: int) -> int:
    return sys_symlinkat(p, target, _CWD, path)


@syscall("linkat")
def sys_linkat(p: GuestProcess, olddir: int, old: int, newdir: int, new: int, flags: int, *_: int) -> int:
    if flags & ~(AT_SYMLINK_FOLLOW | AT_EMPTY_PATH):
        raise _fail(errno.EINVAL)
    src = _path(p, old)
    dst = _locate(p, newdir, _path(p, new))
    # linkat does not follow unless told to: the other way round from the other calls.
    how = (flags & AT_EMPTY_PATH) | (0 if flags & AT_SYMLINK_FOLLOW else AT_SYMLINK_NOFOLLOW)
    with _node(p, olddir, src, how) as (sfd, sname, follow), p.vfs.at(dst) as (dfd, dname):
        os.link(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd, follow_symlinks=follow)
    return 0


@syscall("link")
def sys_link(p: GuestProcess, old: int, new: int, *_: int) -> int:
    return sys_linkat(p, _CWD, old, _CWD, new, 0)


# ------------------------------------------------------------------ times


def _check_times(raw: bytes) -> None:
    _, a_ns, _, m_ns = _TIMESPECS.unpack(raw)
    for ns in (a_ns, m_ns):
        if ns not in (UTIME_NOW, UTIME_OMIT) and not 0 <= ns < 1_000_000_000:
            raise _fail(errno.EINVAL)


def _utimens(p: GuestProcess, dirfd: int, path_addr: int, times: bytes | None, flags: int) -> int:
    """``utimensat`` with the times already read (None: both now)."""
    if flags & ~(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH):
        raise _fail(errno.EINVAL)
    if times is not None:
        _check_times(times)
    if path_addr == 0:  # the descriptor itself (futimens)
        if s32(dirfd) == AT_FDCWD:
            raise _fail(errno.EFAULT)
        if flags & AT_SYMLINK_NOFOLLOW:
            raise _fail(errno.EINVAL)
        host_syscall(NUMBERS["utimensat"], p.fds.get(s32(dirfd)).host_fd, None, times, 0)
        return 0
    with _node(p, dirfd, _path(p, path_addr), flags) as (dfd, name, follow):
        host_syscall(
            NUMBERS["utimensat"],
            AT_FDCWD if dfd is None else dfd,
            os.fsencode(name),
            times,
            0 if follow else AT_SYMLINK_NOFOLLOW,
        )
    return 0


@syscall("utimensat")
def sys_utimensat(p: GuestProcess, dirfd: int, path: int, times: int, flags: int, *_: int) -> int:
    return _utimens(p, dirfd, path, p.mm.read(times, 32) if times else None, flags & 0xFFFFFFFF)


def _timevals(p: GuestProcess, addr: int) -> bytes | None:
    """Two ``timeval``s as two ``timespec``s (None for a NULL pointer: now)."""
    if not addr:
        return None
    a_s, a_us, m_s, m_us = _TIMESPECS.unpack(p.mm.read(addr, 32))
    if not (0 <= a_us < 1_000_000 and 0 <= m_us < 1_000_000):
        raise _fail(errno.EINVAL)
    return _TIMESPECS.pack(a_s, a_us * 1000, m_s, m_us * 1000)


@syscall("futimesat")
def sys_futimesat(p: GuestProcess, dirfd: int, path: int, times: int, *_: int) -> int:
    return _utimens(p, dirfd, path, _timevals(p, times), 0)


@syscall("utimes")
def sys_utimes(p: GuestProcess, path: int, times: int, *_: int) -> int:
    if not path:
        raise _fail(errno.EFAULT)
    return _utimens(p, _CWD, path, _timevals(p, times), 0)


@syscall("utime")
def sys_utime(p: GuestProcess, path: int, buf: int, *_: int) -> int:
    if not path:
        raise _fail(errno.EFAULT)
    times = None
    if buf:
        a_s, m_s = _UTIMBUF.unpack(p.mm.read(buf, 16))
        times = _TIMESPECS.pack(a_s, 0, m_s, 0)
    return _utimens(p, _CWD, path, times, 0)


# ----------------------------------------------------------------- owners


def _id(v: int) -> int:
    """A ``uid_t``/``gid_t`` argument: ``(uid_t)-1`` leaves it alone."""
    v &= 0xFFFFFFFF
    return -1 if v == 0xFFFFFFFF else v


@syscall("fchownat")
def sys_fchownat(p: GuestProcess, dirfd: int, path: int, uid: int, gid: int, flags: int, *_: int) -> int:
    if flags & ~(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH):
        raise _fail(errno.EINVAL)
    with _node(p, dirfd, _path(p, path), flags) as (dfd, name, follow):
        os.chown(name, _id(uid), _id(gid), dir_fd=dfd, follow_symlinks=follow)
    return 0


@syscall("chown")
def sys_chown(p: GuestProcess, path: int, uid: int, gid: int, *_: int) -> int:
    return sys_fchownat(p, _CWD, path, uid, gid, 0)


@syscall("lchown")
def sys_lchown(p: GuestProcess, path: int, uid: int, gid: int, *_: int) -> int:
    return sys_fchownat(p, _CWD, path, uid, gid, AT_SYMLINK_NOFOLLOW)


@syscall("fchown")
def sys_fchown(p: GuestProcess, fd: int, uid: int, gid: int, *_: int) -> int:
    os.fchown(p.fds.get(s32(fd)).host_fd, _id(uid), _id(gid))
    return 0


# ---------------------------------------------------------- special files


@syscall("mknodat")
def sys_mknodat(p: GuestProcess, dirfd: int, path: int, mode: int, dev: int, *_: int) -> int:
    kind = mode & 0o170000 or stat.S_IFREG  # S_IFMT
    if kind == stat.S_IFDIR:
        raise _fail(errno.EPERM)
    if kind not in (stat.S_IFREG, stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR, stat.S_IFBLK):
        raise _fail(errno.EINVAL)
    if kind in (stat.S_IFCHR, stat.S_IFBLK) and p.vfs.confined:
        # A device node inside the root would open the host's device: not for a confined guest.
        p.note = "device nodes are refused to a guest confined to a root"
        raise _fail(errno.EPERM)
    with p.vfs.at(_locate(p, dirfd, _path(p, path))) as (dfd, name):
        os.mknod(name, kind | (mode & 0o7777 & ~p.vfs.umask), dev & 0xFFFFFFFF, dir_fd=dfd)
    return 0


@syscall("mknod")
def sys_mknod(p: GuestProcess, path: int, mode: int, dev: int, *_: int) -> int:
    return sys_mknodat(p, _CWD, path, mode, dev)


# ------------------------------------------------------ space and syncing


@syscall("fallocate")
def sys_fallocate(p: GuestProcess, fd: int, mode: int, offset: int, length: int, *_: int) -> int:
    host = p.fds.get(s32(fd)).host_fd
    host_syscall(NUMBERS["fallocate"], host, s32(mode), s64(offset), s64(length))
    return 0


@syscall("sync")
def sys_sync(p: GuestProcess, *_: int) -> int:
    os.sync()
    return 0


@syscall("syncfs")
def sys_syncfs(p: GuestProcess, fd: int, *_: int) -> int:
    host_syscall(NUMBERS["syncfs"], p.fds.get(s32(fd)).host_fd)
    return 0


def _statfs(p: GuestProcess, host_fd: int, buf: int) -> int:
    p.mm.views(buf, _STATFS_SIZE, write=True)  # EFAULT before any work
    out = ctypes.create_string_buffer(_STATFS_SIZE)
    host_syscall(NUMBERS["fstatfs"], host_fd, out)
    p.mm.write(buf, out.raw)
    return 0


@syscall("statfs")
def sys_statfs(p: GuestProcess, path: int, buf: int, *_: int) -> int:
    fd = p.vfs.open(_locate(p, _CWD, _path(p, path)), os.O_PATH)
    try:
        return _statfs(p, fd, buf)
    finally:
        os.close(fd)


@syscall("fstatfs")
def sys_fstatfs(p: GuestProcess, fd: int, buf: int, *_: int) -> int:
    return _statfs(p, p.fds.get(s32(fd)).host_fd, buf)


# ------------------------------------------------------------------- root


@syscall("chroot")
def sys_chroot(p: GuestProcess, path: int, *_: int) -> int:
    loc = _locate(p, _CWD, _path(p, path))
    os.close(p.vfs.open(loc, os.O_PATH | os.O_DIRECTORY))  # ENOENT, ENOTDIR come first
    if p.euid != 0:
        raise _fail(errno.EPERM)
    p.vfs.chroot(loc)
    return 0


# ------------------------------------------------------------------- mounts

_UMOUNT_FLAGS = 0x1 | 0x2 | 0x4 | 0x8  # MNT_FORCE, MNT_DETACH, MNT_EXPIRE, UMOUNT_NOFOLLOW
_UMOUNT_NOFOLLOW = 0x8


def _host_mount_points() -> set[bytes]:
    """The host paths where something is mounted (``/proc/self/mountinfo``, field 5, unescaped)."""
    points = set()
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            fields = line.split(b" ")
            if len(fields) > 4:
                points.add(_unescape(fields[4]))
    return points


def _unescape(field: bytes) -> bytes:
    """Undo mountinfo's ``\\ooo`` escapes (space, tab, newline, backslash)."""
    out = bytearray()
    i = 0
    while i < len(field):
        if field[i : i + 1] == b"\\" and field[i + 1 : i + 4].isdigit():
            out.append(int(field[i + 1 : i + 4], 8) & 0xFF)
            i += 4
        else:
            out.append(field[i])
            i += 1
    return bytes(out)


@syscall("umount2")
def sys_umount2(p: GuestProcess, path: int, flags: int, *_: int) -> int:
    """Checked as Linux checks it (flags, privilege, the path, a mount point there), then
    refused: a guest may not change the host's mounts (EPERM where Linux would unmount)."""
    if flags & ~_UMOUNT_FLAGS & 0xFFFFFFFF:
        raise _fail(errno.EINVAL)
    if p.euid != 0:
        raise _fail(errno.EPERM)
    loc = _locate(p, _CWD, _path(p, path))
    fd = p.vfs.open(loc, os.O_PATH | (os.O_NOFOLLOW if flags & _UMOUNT_NOFOLLOW else 0))
    try:
        where = os.readlink(f"/proc/self/fd/{fd}").encode()
    finally:
        os.close(fd)
    if where not in _host_mount_points():
        raise _fail(errno.EINVAL)
    p.note = "guests may not change the host's mounts"
    raise _fail(errno.EPERM)


@syscall("mount")
def sys_mount(p: GuestProcess, *_: int) -> int:
    """Refused: a guest may not change the host's mounts (EPERM, as for a process without
    CAP_SYS_ADMIN)."""
    p.note = "guests may not change the host's mounts"
    raise _fail(errno.EPERM)


# ----------------------------------------------------------------- xattrs

#: Linux's limits on an attribute's name (with its NUL) and value, and on a list.
XATTR_NAME_MAX = 255
XATTR_SIZE_MAX = 65536
XATTR_LIST_MAX = 65536


@contextmanager
def _xattr_file(p: GuestProcess, path: int, follow: bool) -> Iterator[str]:
    """A host path for the file the guest names (the symlink itself unless ``follow``)."""
    fd = p.vfs.open(_locate(p, _CWD, _path(p, path)), os.O_PATH | (0 if follow else os.O_NOFOLLOW))
    try:
        yield _fd_path(fd)  # the magic link leads to the file itself, never further
    finally:
        os.close(fd)


def _xattr_name(p: GuestProcess, addr: int) -> str:
    try:
        name = p.mm.read_cstr(addr, XATTR_NAME_MAX + 1)
    except SyscallError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise _fail(errno.ERANGE) from exc
        raise
    if not name:
        raise _fail(errno.ERANGE)
    return os.fsdecode(name)


def _answer_blob(p: GuestProcess, blob: bytes, buf: int, size: int, limit: int) -> int:
    """Linux's answer to a get or list: the length for a size of 0, else the bytes."""
    size &= 0xFFFFFFFFFFFFFFFF
    if len(blob) > limit:
        raise _fail(errno.E2BIG)
    if size == 0:
        return len(blob)
    if len(blob) > size:
        raise _fail(errno.ERANGE)
    p.mm.write(buf, blob)
    return len(blob)


def _getxattr(p: GuestProcess, target: str | int, name_addr: int, buf: int, size: int) -> int:
    name = _xattr_name(p, name_addr)
    return _answer_blob(p, os.getxattr(target, name), buf, size, XATTR_SIZE_MAX)


def _listxattr(p: GuestProcess, target: str | int, buf: int, size: int) -> int:
    names = b"".join(os.fsencode(n) + b"\0" for n in os.listxattr(target))
    return _answer_blob(p, names, buf, size, XATTR_LIST_MAX)


@syscall("getxattr")
def sys_getxattr(p: GuestProcess, path: int, name: int, buf: int, size: int, *_: int) -> int:
    with _xattr_file(p, path, True) as target:
        return _getxattr(p, target, name, buf, size)


@syscall("lgetxattr")
def sys_lgetxattr(p: GuestProcess, path: int, name: int, buf: int, size: int, *_: int) -> int:
    with _xattr_file(p, path, False) as target:
        return _getxattr(p, target, name, buf, size)


@syscall("fgetxattr")
def sys_fgetxattr(p: GuestProcess, fd: int, name: int, buf: int, size: int, *_: int) -> int:
    return _getxattr(p, p.fds.get(s32(fd)).host_fd, name, buf, size)


@syscall("listxattr")
def sys_listxattr(p: GuestProcess, path: int, buf: int, size: int, *_: int) -> int:
    with _xattr_file(p, path, True) as target:
        return _listxattr(p, target, buf, size)


@syscall("llistxattr")
def sys_llistxattr(p: GuestProcess, path: int, buf: int, size: int, *_: int) -> int:
    with _xattr_file(p, path, False) as target:
        return _listxattr(p, target, buf, size)


@syscall("flistxattr")
def sys_flistxattr(p: GuestProcess, fd: int, buf: int, size: int, *_: int) -> int:
    return _listxattr(p, p.fds.get(s32(fd)).host_fd, buf, size)

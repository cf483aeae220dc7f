"""Guest descriptors, open files and paths.

A guest descriptor names an :class:`OpenFile` (Linux's "open file description"):
one host descriptor the controller owns, shared by every guest descriptor
``dup``'d from it, with the state the kernel keeps there (the directory cursor).
Closing the last guest descriptor closes the host one.

The controller is one thread serving every guest on one event loop, so no
operation here may block: reading a pipe or a terminal first waits for readiness
with the loop (``add_reader``), then reads what is there; writing a pipe goes
through a second, non-blocking description of the same pipe (opened through
``/proc/self/fd``) so that a full pipe makes the guest wait, never the loop.  The
guest's own ``O_NONBLOCK`` (kept with the shared description, as on Linux) turns
the waits off and the guest sees ``EAGAIN``.  That flag is the runner's record, not
the host descriptor's: a loop may switch a descriptor it watches to non-blocking
(libuv does, and uvloop with it), and that must change nothing for a guest.
:func:`wait_fd` puts the host flag back once nobody waits, so a terminal shared
with the runner's caller is left as it was found.

Paths are resolved inside a root directory.  With the root ``/`` a guest path is a
host path.  Any other root is enforced by the kernel: every lookup is an
``openat2(root, path, RESOLVE_IN_ROOT)``, so ``..`` and symlinks cannot leave it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import fcntl
import os
import re
import select
import stat
import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from .errors import PartlyDone, SyscallError
from .memory import PROT_WRITE, AddressSpace, FileBacking

__all__ = ["FdTable", "FifoEnd", "Loc", "OpenFile", "Vfs", "host_syscall", "wait_fd"]

#: Linux's default soft RLIMIT_NOFILE.
DEFAULT_FD_LIMIT = 1024
PIPE_BUF = 4096

DT_UNKNOWN = 0
DT_FIFO = 1
DT_CHR = 2
DT_DIR = 4
DT_BLK = 6
DT_REG = 8
DT_LNK = 10
DT_SOCK = 12

_DIRENT_HEAD = struct.Struct("<QqHB")  # d_ino, d_off, d_reclen, d_type (then the name)

_O_TMPFILE = 0o20200000
#: Every flag open(2) knows (it ignores others; openat2 would refuse them).
_VALID_OPEN_FLAGS = (
    os.O_ACCMODE
    | os.O_CREAT
    | os.O_EXCL
    | os.O_NOCTTY
    | os.O_TRUNC
    | os.O_APPEND
    | os.O_NONBLOCK
    | os.O_DSYNC
    | os.O_ASYNC
    | os.O_DIRECT
    | os.O_LARGEFILE
    | os.O_DIRECTORY
    | os.O_NOFOLLOW
    | os.O_NOATIME
    | os.O_CLOEXEC
    | os.O_SYNC
    | os.O_PATH
    | _O_TMPFILE
)
_PATH_OPEN_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

_AT_FDCWD = -100
_SYS_OPENAT2 = 437
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_IN_ROOT = 0x10
_PROC_PID = re.compile(r"^/proc/(\d+)(?:/|$)")
#: Names a guest uses for its own descriptors: reopened from the guest's table, never looked up.
_FD_ALIASES = {"/dev/stdin": 0, "/dev/stdout": 1, "/dev/stderr": 2}
_FD_PATH = re.compile(r"^/(?:dev/fd|proc/self/fd|proc/thread-self/fd)/(\d+)$")
_OPEN_HOW = struct.Struct("<QQQ")

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long

HostArg = int | bytes | ctypes.Array[ctypes.c_char] | None


def host_syscall(nr: int, *args: HostArg) -> int:
    """A raw host syscall (for calls the ``os`` module lacks); raises :class:`OSError`.

    Integers go as ``long``, bytes and ctypes buffers as pointers, None as NULL.
    """
    conv: list[object] = []
    for a in args:
        if isinstance(a, int):
            conv.append(ctypes.c_long(a))
        elif isinstance(a, bytes):
            conv.append(ctypes.c_char_p(a))
        elif a is None:
            conv.append(ctypes.c_void_p(None))
        else:
            conv.append(a)
    res = int(_syscall(ctypes.c_long(nr), *conv))
    if res < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return res


def openat2(dirfd: int, path: bytes, flags: int, mode: int, resolve: int) -> int:
    """``openat2(2)``; raises :class:`OSError`."""
    how = _OPEN_HOW.pack(flags, mode, resolve)
    fd = int(
        _syscall(
            ctypes.c_long(_SYS_OPENAT2),
            ctypes.c_long(dirfd),
            ctypes.c_char_p(path),
            ctypes.c_char_p(how),
            ctypes.c_long(len(how)),
        )
    )
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return fd


def _mode_dtype(mode: int) -> int:
    for test, dt in (
        (stat.S_ISDIR, DT_DIR),
        (stat.S_ISREG, DT_REG),
        (stat.S_ISLNK, DT_LNK),
        (stat.S_ISFIFO, DT_FIFO),
        (stat.S_ISCHR, DT_CHR),
        (stat.S_ISBLK, DT_BLK),
        (stat.S_ISSOCK, DT_SOCK),
    ):
        if test(mode):
            return dt
    return DT_UNKNOWN


def _ready(fd: int, events: int) -> bool:
    p = select.poll()
    p.register(fd, events)
    return bool(p.poll(0))


#: Guests waiting for a host descriptor, by (loop, descriptor, direction).  A loop
#: keeps one callback per descriptor and direction, and guest processes share
#: descriptors (a forked shell and its children all hold the same pipe ends), so
#: the loop is asked once and every waiter is woken; each then looks again.
_WAITERS: dict[tuple[int, int, bool], list[asyncio.Future[None]]] = {}


#: Whether each watched descriptor was in blocking mode before the loop watched it.
_RESTORE: dict[tuple[int, int, bool], bool] = {}


def _unwatch(loop: asyncio.AbstractEventLoop, fd: int, write: bool, was_blocking: bool) -> None:
    _RESTORE.pop((id(loop), fd, write), None)
    if write:
        loop.remove_writer(fd)
    else:
        loop.remove_reader(fd)
    if was_blocking and not any(k[1] == fd for k in _WAITERS):
        with contextlib.suppress(OSError):
            os.set_blocking(fd, True)


async def wait_fd(fd: int, *, write: bool = False) -> None:
    """Wait, on the running loop, until ``fd`` is readable (or writable).

    Any number of waiters may wait for the same descriptor at once.
    """
    loop = asyncio.get_running_loop()
    key = (id(loop), fd, write)
    fut: asyncio.Future[None] = loop.create_future()
    waiters = _WAITERS.get(key)
    if waiters is None:
        waiters = _WAITERS[key] = []
        was_blocking = os.get_blocking(fd)

        def ready() -> None:
            woken = _WAITERS.pop(key, [])
            _unwatch(loop, fd, write, was_blocking)
            for w in woken:
                if not w.done():
                    w.set_result(None)

        _RESTORE[key] = was_blocking

        if write:
            loop.add_writer(fd, ready)
        else:
            loop.add_reader(fd, ready)
    waiters.append(fut)
    try:
        await fut
    finally:
        if not fut.done():
            fut.cancel()
        current = _WAITERS.get(key)
        if current is not None and fut in current:
            current.remove(fut)
            if not current:
                del _WAITERS[key]
                _unwatch(loop, fd, write, _RESTORE.get(key, False))


# ---------------------------------------------------------------- FIFOs
#
# Linux's open of a FIFO waits for the other end: for reading, until a writer has
# opened it (a writer that came and went counts); for writing, until a reader has
# (with O_NONBLOCK and no reader: ENXIO).  O_RDWR and a non-blocking reader never
# wait.  A waiting open already counts as an end, so the two sides of
# `cat fifo & echo hi > fifo` find each other whichever comes first.
#
# The controller may not block, so it opens FIFOs non-blocking and does the
# waiting itself.  Two facts decide how:
# * The host says whether a FIFO has a reader (a non-blocking open for writing
#   fails with ENXIO when it has none), but not whether it has a writer, and a
#   reader's descriptor shows no event for a writer that opened without writing.
# * An open by a guest of this controller is seen here.
# So the guests' ends of each FIFO are counted here (`_Fifo`, Linux's counts and
# counters), and every guest open of a FIFO wakes the guests waiting to open its
# other end.  Ends outside the controller are seen as the host shows them: a
# waiting writer tries its open again now and then; a waiting reader wakes when
# its descriptor shows data or a hang-up.


class _Fifo:
    """This controller's guests' ends of one FIFO (by device and inode)."""

    def __init__(self, key: tuple[int, int]) -> None:
        self.key = key
        #: Open descriptions (waiting opens included) reading and writing it.
        self.readers = 0
        self.writers = 0
        #: Opens for reading and for writing so far (Linux's ``r_counter``, ``w_counter``).
        self.read_opens = 0
        self.write_opens = 0
        self._waiters: list[asyncio.Future[None]] = []

    def opened(self) -> None:
        """A guest opened an end: every guest waiting to open the other end looks again."""
        woken, self._waiters = self._waiters, []
        for fut in woken:
            if not fut.done():
                fut.set_result(None)

    async def wait(self, *, timeout: float | None = None, fd: int = -1) -> None:
        """Until a guest opens an end, host ``fd`` is readable or hung up, or ``timeout`` passes."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not fut.done():
                fut.set_result(None)

        self._waiters.append(fut)
        timer = loop.call_later(timeout, wake) if timeout is not None else None
        if fd >= 0:
            loop.add_reader(fd, wake)
        try:
            await fut
        finally:
            if timer is not None:
                timer.cancel()
            if fd >= 0:
                loop.remove_reader(fd)
            if fut in self._waiters:
                self._waiters.remove(fut)


_FIFOS: dict[tuple[int, int], _Fifo] = {}


class FifoEnd:
    """A guest's open (or opening) of a FIFO by name, counted in its :class:`_Fifo` while it lasts."""

    def __init__(self, host_fd: int, flags: int) -> None:
        st = os.fstat(host_fd)
        key = (st.st_dev, st.st_ino)
        self.fifo = _FIFOS.get(key) or _FIFOS.setdefault(key, _Fifo(key))
        acc = flags & os.O_ACCMODE
        self.reading = acc in (os.O_RDONLY, os.O_RDWR)
        self.writing = acc in (os.O_WRONLY, os.O_RDWR)
        self._open = True
        f = self.fifo
        f.readers += self.reading
        f.writers += self.writing
        f.read_opens += self.reading
        f.write_opens += self.writing
        f.opened()

    def close(self) -> None:
        """The description is closed (or the open failed); idempotent."""
        if not self._open:
            return
        self._open = False
        f = self.fifo
        f.readers -= self.reading
        f.writers -= self.writing
        if not (f.readers or f.writers) and _FIFOS.get(f.key) is f:
            del _FIFOS[f.key]

    async def wait_for_writer(self, host_fd: int) -> None:
        """A blocking open for reading: return once the FIFO has (or has had) a writer.

        ``host_fd`` is the reader's own descriptor, opened non-blocking before
        this end was counted: a writer from outside the controller shows on it
        as data or, once it is gone, a hang-up.
        """
        f = self.fifo
        seen = f.write_opens
        while not f.writers and f.write_opens == seen:
            if _ready(host_fd, select.POLLIN | select.POLLHUP):
                return
            await f.wait(fd=host_fd)

    async def wait_for_reader(self, path_fd: int, flags: int) -> int:
        """A blocking open for writing of the FIFO ``path_fd`` (``O_PATH``): the host descriptor, once it has a reader.

        A reader that came and went meanwhile ends the wait too, as on Linux: the
        open succeeds and a write then meets no reader (``SIGPIPE``).
        """
        f = self.fifo
        seen = f.read_opens
        again = 0.005  # readers outside the controller are looked for at growing intervals
        while True:
            try:
                return _reopen_fifo(path_fd, flags)
            except OSError as exc:
                if exc.errno != errno.ENXIO:
                    raise
            if f.read_opens != seen:
                with contextlib.suppress(OSError):
                    return _write_end_alone(path_fd, flags)
            await f.wait(timeout=again)
            again = min(again * 2, 0.1)


def _reopen_fifo(path_fd: int, flags: int) -> int:
    keep = flags & (os.O_ACCMODE | os.O_APPEND | os.O_DSYNC | os.O_SYNC | os.O_NOATIME)
    return os.open(f"/proc/self/fd/{path_fd}", keep | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)


def _write_end_alone(path_fd: int, flags: int) -> int:
    """A write end of a FIFO that has no reader (what Linux's waiting writer gets when its reader left)."""
    both = os.open(f"/proc/self/fd/{path_fd}", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        return _reopen_fifo(path_fd, flags)  # the reader it needs is ``both``, for a moment
    finally:
        os.close(both)


@dataclass
class _DirEntry:
    ino: int
    dtype: int
    name: bytes


class OpenFile:
    """One open file description: a host descriptor and the state shared by dups."""

    def __init__(self, host_fd: int, path: str, *, flags: int = 0) -> None:
        self.host_fd = host_fd
        #: The guest path it was opened by (for ``*at`` calls relative to it).
        self.path = path
        #: The guest's open flags (access mode and the like, for strace and fcntl).
        self.flags = flags
        st = os.fstat(host_fd)
        self.mode = st.st_mode
        m = st.st_mode
        self._may_block = stat.S_ISFIFO(m) or stat.S_ISSOCK(m) or (stat.S_ISCHR(m) and os.isatty(host_fd))
        #: The guest's ``O_NONBLOCK`` on this description (see the module docstring).
        self.nonblocking = bool(fcntl.fcntl(host_fd, fcntl.F_GETFL) & os.O_NONBLOCK)
        self.refs = 0
        #: Its end of a FIFO opened by name (see :class:`FifoEnd`), counted until it is closed.
        self.fifo_end: FifoEnd | None = None
        self._nb_write_fd = -1
        self._dir: list[_DirEntry] | None = None
        self._dir_pos = 0

    # ---------------------------------------------------------------- kinds

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_regular(self) -> bool:
        return stat.S_ISREG(self.mode)

    @property
    def readable(self) -> bool:
        """Opened for reading (``read`` of any other description is ``EBADF``)."""
        return not self.flags & os.O_PATH and self.flags & os.O_ACCMODE in (os.O_RDONLY, os.O_RDWR)

    @property
    def writable(self) -> bool:
        """Opened for writing (``write`` of any other description is ``EBADF``)."""
        return not self.flags & os.O_PATH and self.flags & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR)

    @property
    def may_block(self) -> bool:
        """Whether reading or writing it can wait (pipes, sockets, terminals...)."""
        return self._may_block

    def guest_nonblocking(self) -> bool:
        """The guest set ``O_NONBLOCK`` on this description."""
        return self.nonblocking

    def status_flags(self) -> int:
        """``F_GETFL``: the host description's flags, with the guest's ``O_NONBLOCK``."""
        flags = fcntl.fcntl(self.host_fd, fcntl.F_GETFL) & ~os.O_NONBLOCK
        return flags | (os.O_NONBLOCK if self.nonblocking else 0)

    def set_status_flags(self, flags: int, mask: int) -> None:
        """``F_SETFL``: change the flags in ``mask`` to their value in ``flags``."""
        cur = fcntl.fcntl(self.host_fd, fcntl.F_GETFL)
        fcntl.fcntl(self.host_fd, fcntl.F_SETFL, (cur & ~mask) | (flags & mask))
        if mask & os.O_NONBLOCK:
            self.nonblocking = bool(flags & os.O_NONBLOCK)

    # ---------------------------------------------------------------- I/O

    async def readv(self, views: Sequence[memoryview], offset: int | None = None) -> int:
        """Read into ``views`` (at ``offset`` if given), waiting without blocking the loop."""
        fd = self.host_fd
        if offset is not None:
            return os.preadv(fd, views, offset)
        if not self.may_block:
            return os.readv(fd, views)
        while True:
            if self.guest_nonblocking() or _ready(fd, select.POLLIN | select.POLLHUP | select.POLLERR):
                return os.readv(fd, views)
            await wait_fd(fd)

    async def writev(self, views: Sequence[memoryview], offset: int | None = None) -> int:
        """Write ``views`` whole (at ``offset`` if given), as a blocking write would."""
        fd = self.host_fd
        if offset is not None:
            return os.pwritev(fd, views, offset)
        if not self.may_block or self.guest_nonblocking():
            return os.writev(fd, views)
        nb = self._nonblocking_writer()
        data = memoryview(b"".join(views)) if len(views) != 1 else views[0]
        done = 0
        while done < len(data):
            try:
                if nb >= 0:
                    done += os.write(nb, data[done:])
                    continue
                if _ready(fd, select.POLLOUT | select.POLLERR):
                    # POLLOUT promises room for PIPE_BUF bytes; more could block.
                    done += os.write(fd, data[done : done + PIPE_BUF])
                    continue
            except BlockingIOError:
                pass
            except OSError:
                if done:
                    return done
                raise
            try:
                await wait_fd(nb if nb >= 0 else fd, write=True)
            except asyncio.CancelledError:
                if done:
                    raise PartlyDone(done) from None  # a signal: Linux answers what was written
                raise
        return done

    def _nonblocking_writer(self) -> int:
        # A second description of the same pipe, opened O_NONBLOCK, lets a big write
        # go in as fast as the reader drains it without ever blocking the loop.
        if self._nb_write_fd < 0 and stat.S_ISFIFO(self.mode):
            try:
                self._nb_write_fd = os.open(
                    f"/proc/self/fd/{self.host_fd}",
                    os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY,
                )
            except OSError:
                self._nb_write_fd = -2  # not reopenable: fall back to PIPE_BUF chunks
        return self._nb_write_fd

    async def sendfile_to(self, out: OpenFile, offset: int | None, count: int) -> tuple[int, int | None]:
        """``sendfile`` from this file to ``out``; returns (bytes, new offset or None)."""
        if self.may_block:
            while not _ready(self.host_fd, select.POLLIN | select.POLLHUP | select.POLLERR):
                if self.guest_nonblocking():
                    raise SyscallError(errno.EAGAIN)
                await wait_fd(self.host_fd)
        if not out.may_block or out.guest_nonblocking():
            n = os.sendfile(out.host_fd, self.host_fd, offset, count)
            return n, None if offset is None else offset + n
        # A pipe or terminal on the out side: read a chunk here, write it whole.
        chunk = min(count, 1 << 16)
        data = os.pread(self.host_fd, chunk, offset) if offset is not None else os.read(self.host_fd, chunk)
        if not data:
            return 0, offset
        n = await out.writev([memoryview(data)])
        return n, None if offset is None else offset + n

    # ----------------------------------------------------------- directories

    def rewind(self) -> None:
        """Start a directory listing again (``lseek`` to 0)."""
        self._dir = None
        self._dir_pos = 0

    def _listing(self) -> list[_DirEntry]:
        if self._dir is None:
            entries = [
                _DirEntry(os.fstat(self.host_fd).st_ino, DT_DIR, b"."),
                _DirEntry(os.stat("..", dir_fd=self.host_fd).st_ino, DT_DIR, b".."),
            ]
            with os.scandir(self.host_fd) as it:
                for e in it:
                    try:
                        dtype = _mode_dtype(e.stat(follow_symlinks=False).st_mode)
                    except OSError:
                        dtype = DT_UNKNOWN
                    entries.append(_DirEntry(e.inode(), dtype, os.fsencode(e.name)))
            self._dir = entries
        return self._dir

    def getdents64(self, size: int) -> bytes:
        """The next ``linux_dirent64`` records that fit in ``size`` bytes."""
        if not self.is_dir:
            raise SyscallError(errno.ENOTDIR)
        entries = self._listing()
        out = bytearray()
        while self._dir_pos < len(entries):
            e = entries[self._dir_pos]
            reclen = (_DIRENT_HEAD.size + len(e.name) + 1 + 7) & ~7
            if len(out) + reclen > size:
                if not out:
                    raise SyscallError(errno.EINVAL)
                break
            rec = _DIRENT_HEAD.pack(e.ino, self._dir_pos + 1, reclen, e.dtype) + e.name
            out += rec + bytes(reclen - len(rec))
            self._dir_pos += 1
        return bytes(out)

    def seek_dir(self, pos: int) -> int:
        """``lseek`` on a directory: positions are entry indexes (``d_off``)."""
        if pos < 0:
            raise SyscallError(errno.EINVAL)
        if pos == 0:
            self.rewind()
        self._dir_pos = pos
        return pos

    # ------------------------------------------------------------- mapping

    def map_into(self, mm: AddressSpace, start: int, size: int, prot: int, shared: bool, offset: int) -> int:
        """Map this file for ``mmap(2)`` (see :class:`aioumm.guest.memory.FileSource`)."""
        acc = self.flags & os.O_ACCMODE
        if (
            stat.S_ISCHR(self.mode)
            and os.major(os.fstat(self.host_fd).st_rdev) == 1
            and (os.minor(os.fstat(self.host_fd).st_rdev) == 5)
        ):
            mm.map_anon(start, size, prot, shared=shared)  # /dev/zero
            return start
        if not self.is_regular:
            raise SyscallError(errno.ENODEV)
        if acc == os.O_WRONLY or (shared and prot & PROT_WRITE and acc != os.O_RDWR):
            raise SyscallError(errno.EACCES)
        if shared:
            # Shared: both sides map the file itself, so writes meet in the page cache.
            backing = FileBacking(self.host_fd, writable=acc == os.O_RDWR, stub_shared=True)
            backing.acquire()
            try:
                mm.map_backing(start, size, prot, backing, offset, shared=True, name=self.path)
            finally:
                backing.drop()
            return start
        # Private: the guest gets its own copy of the file's bytes in physmem.
        vma = mm.map_anon(start, size, prot, name=self.path)
        view = mm.physmem.view[vma.offset : vma.offset + size]
        try:
            os.preadv(self.host_fd, [view], offset)
        finally:
            view.release()
        return start

    def close(self) -> None:
        """Close the host descriptors (idempotent)."""
        for fd in (self.host_fd, self._nb_write_fd):
            if fd >= 0:
                os.close(fd)
        self.host_fd = self._nb_write_fd = -1
        if self.fifo_end is not None:
            self.fifo_end.close()


@dataclass
class _Slot:
    file: OpenFile
    cloexec: bool


class FdTable:
    """A guest's descriptor table: guest fd number -> (open file, close-on-exec)."""

    def __init__(self, limit: int = DEFAULT_FD_LIMIT) -> None:
        self.limit = limit
        self._slots: dict[int, _Slot] = {}

    def __contains__(self, fd: int) -> bool:
        return fd in self._slots

    def __iter__(self) -> Iterator[int]:
        return iter(sorted(self._slots))

    def get(self, fd: int) -> OpenFile:
        """The open file behind guest ``fd``; ``EBADF`` if there is none."""
        slot = self._slots.get(fd)
        if slot is None:
            raise SyscallError(errno.EBADF)
        return slot.file

    def cloexec(self, fd: int) -> bool:
        """The ``FD_CLOEXEC`` flag of guest ``fd``."""
        self.get(fd)
        return self._slots[fd].cloexec

    def set_cloexec(self, fd: int, on: bool) -> None:
        self.get(fd)
        self._slots[fd].cloexec = on

    def install(self, file: OpenFile, *, cloexec: bool = False, lowest: int = 0) -> int:
        """Give ``file`` the lowest free number >= ``lowest``; ``EMFILE`` when full."""
        fd = lowest
        while fd in self._slots:
            fd += 1
        if fd >= self.limit:
            raise SyscallError(errno.EMFILE)
        self.install_at(fd, file, cloexec=cloexec)
        return fd

    def install_at(self, fd: int, file: OpenFile, *, cloexec: bool = False) -> None:
        """Put ``file`` at number ``fd``, closing what was there (as ``dup2`` does)."""
        if not 0 <= fd < self.limit:
            raise SyscallError(errno.EBADF)
        file.refs += 1
        old = self._slots.get(fd)
        self._slots[fd] = _Slot(file, cloexec)
        if old is not None:
            self._unref(old.file)

    def close(self, fd: int) -> None:
        """Close guest ``fd``; ``EBADF`` if it is not open."""
        slot = self._slots.pop(fd, None)
        if slot is None:
            raise SyscallError(errno.EBADF)
        self._unref(slot.file)

    @staticmethod
    def _unref(file: OpenFile) -> None:
        file.refs -= 1
        if file.refs <= 0:
            file.close()

    def close_all(self) -> None:
        """Close every descriptor (the guest is gone)."""
        for fd in list(self._slots):
            self.close(fd)

    def close_on_exec(self) -> None:
        """Close every descriptor marked ``FD_CLOEXEC`` (an ``execve`` succeeded)."""
        for fd in [fd for fd, slot in self._slots.items() if slot.cloexec]:
            self.close(fd)

    def fork_copy(self) -> FdTable:
        """The table a forked child starts with: the same open files, flags and limit.

        Each guest descriptor of the child names the *same* :class:`OpenFile` as
        the parent's (one open file description, as after ``fork`` on Linux:
        shared offset and status flags); the host descriptor closes with the last
        guest descriptor of any process.
        """
        twin = FdTable(self.limit)
        for fd, slot in self._slots.items():
            slot.file.refs += 1
            twin._slots[fd] = _Slot(slot.file, slot.cloexec)
        return twin


@dataclass(frozen=True)
class Loc:
    """A guest path ready for the host's ``*at`` calls: ``(dirfd, path)``."""

    dirfd: int
    path: str


def guest_fd_alias(path: str) -> int | None:
    """The guest descriptor that ``/dev/fd/N``, ``/dev/stdin``... name, if ``path`` is one of them."""
    path = re.sub("/+", "/", path)
    if path in _FD_ALIASES:
        return _FD_ALIASES[path]
    m = _FD_PATH.match(path)
    return int(m.group(1)) if m else None


class Vfs:
    """Path resolution for one guest: its root directory and working directory.

    Not confined (root ``/``): a guest lookup is the host lookup, relative to the
    guest's own working-directory descriptor (the controller's cwd is never
    changed: many guests share it).  Confined: every lookup goes through
    ``openat2(root, path, RESOLVE_IN_ROOT)`` with the path made absolute in guest
    terms, so the kernel keeps ``..`` and symlinks inside the root.

    Lookups happen in the controller, so ``/proc`` would describe the
    controller, whose memory and descriptors hold every other guest.  Hence:
    ``/proc/self`` and ``/proc/thread-self`` are rewritten to the guest's own
    stub (``proc_pid``); every open refuses magic links
    (``RESOLVE_NO_MAGICLINKS``: ``/proc/<pid>/fd/N``, ``exe``, ``cwd``...), the
    guest's own descriptor names being served from its table by the caller; and
    an opened file that turns out to live under ``/proc/<pid>`` of any other
    process is closed again with ``EACCES``, however the path got there.
    """

    #: procfs's device number: what the post-open check looks for.
    _proc_dev = os.stat("/proc").st_dev

    def __init__(self, root: str = "/", cwd: str | None = None) -> None:
        #: Host pid of this guest's stub: what ``/proc/self`` means to the guest.
        self.proc_pid: int | None = None
        self.root = os.path.realpath(root)
        self.confined = self.root != "/"
        self.root_fd = os.open(self.root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        self.cwd = "/"
        self.cwd_fd = -1
        self.umask = 0o022
        try:
            start = cwd if cwd is not None else (self.guest_path_of_host(os.getcwd()) or "/")
            self.chdir(Loc(self.root_fd, start) if self.confined else Loc(-1, start))
        except OSError:
            if cwd is not None:  # asked for: its failure is the caller's to see
                self.close()
                raise
            self.chdir(Loc(self.root_fd, "/"))

    def fork_copy(self) -> Vfs:
        """An independent copy (same root, working directory and umask) for a forked child."""
        twin = Vfs.__new__(Vfs)
        twin.proc_pid = None  # the child's stub: set by its process
        twin.root = self.root
        twin.confined = self.confined
        twin.cwd = self.cwd
        twin.umask = self.umask
        twin.root_fd = twin.cwd_fd = -1
        try:
            twin.root_fd = fcntl.fcntl(self.root_fd, fcntl.F_DUPFD_CLOEXEC, 0)
            twin.cwd_fd = fcntl.fcntl(self.cwd_fd, fcntl.F_DUPFD_CLOEXEC, 0)
        except BaseException:
            twin.close()
            raise
        return twin

    def close(self) -> None:
        """Close the root and working-directory descriptors."""
        for fd in (self.root_fd, self.cwd_fd):
            if fd >= 0:
                os.close(fd)
        self.root_fd = self.cwd_fd = -1

    def guest_path_of_host(self, host: str) -> str | None:
        """The guest's name for a host path, or None if it lies outside the root."""
        if not self.confined:
            return host
        if host == self.root:
            return "/"
        if host.startswith(self.root + "/"):
            return host[len(self.root) :]
        return None

    def _own_proc(self, path: str) -> str:
        """``/proc/self`` and ``/proc/thread-self`` of an absolute path, as the guest's stub."""
        squeezed = re.sub("/+", "/", path)
        for alias, own in (
            ("/proc/self", ""),
            ("/proc/thread-self", "/task/{pid}"),
            ("/proc/mounts", "/mounts"),
            ("/proc/net", "/net"),  # symlinks into /proc/self
        ):
            if squeezed == alias or squeezed.startswith(alias + "/"):
                pid = self.proc_pid if self.proc_pid is not None else 0  # 0: no such process
                return f"/proc/{pid}" + own.format(pid=pid) + squeezed[len(alias) :]
        return path

    def locate(self, path: str, base: OpenFile | None = None) -> Loc:
        """Where ``path`` is, relative to ``base`` (a directory) or the cwd."""
        if path.startswith("/"):
            path = self._own_proc(path)
        if not self.confined:
            if path.startswith("/"):
                return Loc(-1, path)
            return Loc(base.host_fd if base is not None else self.cwd_fd, path)
        if path.startswith("/"):
            return Loc(self.root_fd, path)
        top = base.path if base is not None else self.cwd
        # No normalising here: ".." and symlinks are the kernel's to resolve.
        return Loc(self.root_fd, top.rstrip("/") + "/" + path)

    def open(self, loc: Loc, flags: int, mode: int = 0) -> int:
        """Open on the host (always close-on-exec, never a controlling tty)."""
        flags = (flags & _VALID_OPEN_FLAGS) | os.O_CLOEXEC
        if flags & os.O_PATH:
            flags &= _PATH_OPEN_FLAGS  # what O_PATH allows (openat2 refuses the rest)
        else:
            flags |= os.O_NOCTTY
        if not flags & (os.O_CREAT | _O_TMPFILE):
            mode = 0
        # Opening a FIFO waits for its other end: open non-blocking so the loop never
        # waits (the caller waits on the loop, see FifoEnd; a FIFO opened for writing
        # with no reader fails here with ENXIO), then give the description the
        # blocking mode the guest asked for.
        wanted_nb = flags & os.O_NONBLOCK
        if not flags & os.O_PATH:
            flags |= os.O_NONBLOCK
        if not self.confined:
            dirfd = loc.dirfd if loc.dirfd >= 0 else _AT_FDCWD
            fd = openat2(dirfd, os.fsencode(loc.path), flags, mode, _RESOLVE_NO_MAGICLINKS)
        else:
            fd = openat2(self.root_fd, os.fsencode(loc.path), flags, mode, _RESOLVE_IN_ROOT | _RESOLVE_NO_MAGICLINKS)
        try:
            self._refuse_other_processes(fd)
        except BaseException:
            os.close(fd)
            raise
        if not wanted_nb and not flags & os.O_PATH:
            os.set_blocking(fd, True)
        return fd

    def _refuse_other_processes(self, fd: int) -> None:
        """EACCES for a procfs file of any process but the guest's own stub (see the class doc)."""
        if os.fstat(fd).st_dev != self._proc_dev:
            return
        m = _PROC_PID.match(os.readlink(f"/proc/self/fd/{fd}"))
        if m is not None and int(m.group(1)) != self.proc_pid:
            raise OSError(errno.EACCES, os.strerror(errno.EACCES))

    def stat(self, loc: Loc, *, follow: bool = True) -> os.stat_result:
        """``stat``/``lstat`` of a located path."""
        if not self.confined:
            return os.stat(loc.path, dir_fd=loc.dirfd if loc.dirfd >= 0 else None, follow_symlinks=follow)
        fd = self.open(loc, os.O_PATH | (0 if follow else os.O_NOFOLLOW))
        try:
            return os.fstat(fd)
        finally:
            os.close(fd)

    @contextmanager
    def at(self, loc: Loc) -> Iterator[tuple[int | None, str]]:
        """``(dir_fd, name)`` for the host calls that act on a name (unlink, rename...)."""
        if not self.confined:
            yield (loc.dirfd if loc.dirfd >= 0 else None), loc.path
            return
        path = loc.path.rstrip("/") or "/"
        head, _, name = path.rpartition("/")
        if name in ("", ".", ".."):
            raise SyscallError(errno.EINVAL)
        dfd = self.open(Loc(self.root_fd, head or "/"), os.O_PATH | os.O_DIRECTORY)
        try:
            yield dfd, name
        finally:
            os.close(dfd)

    def chdir(self, loc: Loc) -> None:
        """Make a located directory the working directory; raises :class:`OSError`."""
        fd = self.open(loc, os.O_PATH | os.O_DIRECTORY)
        if self.cwd_fd >= 0:
            os.close(self.cwd_fd)
        self.cwd_fd = fd
        self.cwd = self.path_of(fd)

    def chroot(self, loc: Loc) -> None:
        """Make a located directory the root; raises :class:`OSError`.

        The working directory stays where it is on the host; a guest that keeps
        it outside the new root sees it as ``/`` (Linux would let it climb out).
        """
        fd = self.open(loc, os.O_PATH | os.O_DIRECTORY)
        os.close(self.root_fd)
        self.root_fd = fd
        self.root = os.readlink(f"/proc/self/fd/{fd}")
        self.confined = self.root != "/"
        self.cwd = self.path_of(self.cwd_fd)

    def path_of(self, fd: int) -> str:
        """The guest path of an open host descriptor."""
        host = os.readlink(f"/proc/self/fd/{fd}")
        return self.guest_path_of_host(host) or "/"

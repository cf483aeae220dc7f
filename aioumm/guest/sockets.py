"""Guest sockets: host sockets the controller owns, served without blocking the loop.

Some facts about serving sockets from one controller thread, and what follows:

* Every guest socket is a host socket of the controller, always in non-blocking
  mode on the host.  The guest's own ``O_NONBLOCK`` (``SOCK_NONBLOCK``,
  ``fcntl``, ``FIONBIO``) is the runner's record on the :class:`SocketFile`, as
  for pipes.  A call that would block (``EAGAIN`` on the host) and is allowed to
  block waits for readiness on the loop, then tries again; other guests go on
  meanwhile.  ``SO_RCVTIMEO``/``SO_SNDTIMEO`` (kept on the host socket) bound
  that wait the way Linux bounds a blocking call: ``EAGAIN`` when it runs out.
* Data moves with the host's ``sendmsg``/``recvmsg`` called through ctypes, so
  addresses and control messages travel as raw bytes, exactly as the guest
  wrote them or the kernel gave them: no decoding into Python objects and back.
  Send always adds ``MSG_NOSIGNAL`` (the controller must not get ``SIGPIPE``);
  the guest gets its ``SIGPIPE`` from the runner, unless it asked for
  ``MSG_NOSIGNAL``.
* ``AF_INET`` and ``AF_INET6`` are the host's network stack: addresses pass
  through unchanged, and a guest meets whatever the host can reach.
* ``AF_UNIX`` names are translated, because paths are the guest's.  A path is
  looked up inside the guest's root like every guest path: ``bind`` opens the
  parent directory (``O_PATH``, inside the root) and binds
  ``/proc/self/fd/<dir>/<name>`` (the directory descriptor stays open while the
  socket lives, so that host name stays unique); ``connect`` and ``sendto`` open
  the socket file itself (``O_PATH``, symlinks followed inside the root) and
  connect to ``/proc/self/fd/<fd>``.  A symlink can never lead the host call out
  of the root.  The name the guest bound is remembered by host name, so
  ``getsockname``, ``getpeername``, ``accept`` and ``recvfrom`` show guest names.
* Abstract names (a leading NUL) have no file to confine them, so each run gets
  a tag that prefixes every abstract name its guests use on the host: guests of
  one run meet each other, never a host service or a guest of another run.  The
  tag takes room in the 108 bytes of ``sun_path``; a name too long with it fails
  with ``EINVAL``.
* ``AF_NETLINK`` is offered for ``NETLINK_ROUTE`` only, to read the host's
  network configuration (``ip link``, ``ip addr``): a guest may send requests that
  ask (``RTM_GET*``), never ones that change anything (``EPERM``), so a guest
  confined to a root cannot reconfigure the host's network.
* ``SCM_RIGHTS`` really passes host descriptors through the host socket (the
  kernel keeps them alive while in flight, closes them when the message is
  dropped).  The receiver would get a new :class:`OpenFile` for them, but Linux
  passes the *same* open file description, and the guest's state lives on the
  :class:`OpenFile` (``O_NONBLOCK``, the directory cursor).  So every file sent
  is remembered (weakly), and a received descriptor that ``kcmp`` says is the
  same description as one of them is installed as that very :class:`OpenFile`.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import fcntl
import itertools
import os
import stat
import struct
import time
import weakref
from collections.abc import Callable, Sequence

from .errors import SyscallError
from .files import OpenFile, host_syscall, wait_fd
from .table import NUMBERS

__all__ = [
    "AF_INET",
    "AF_INET6",
    "AF_NETLINK",
    "AF_UNIX",
    "SocketFile",
    "adopt_host_fd",
    "guest_sockaddr",
    "host_getname",
    "run_tag",
]

AF_UNIX = 1
AF_INET = 2
AF_INET6 = 10
AF_NETLINK = 16
#: The families a guest may create (netlink: ``NETLINK_ROUTE`` alone, and only to ask).
FAMILIES = frozenset({AF_UNIX, AF_INET, AF_INET6, AF_NETLINK})
NETLINK_ROUTE = 0

SOCK_STREAM = 1
SOCK_DGRAM = 2
SOCK_SEQPACKET = 5
SOCK_TYPE_MASK = 0xF
SOCK_NONBLOCK = os.O_NONBLOCK
SOCK_CLOEXEC = os.O_CLOEXEC

MSG_PEEK = 0x2
MSG_CTRUNC = 0x8
MSG_DONTWAIT = 0x40
MSG_WAITALL = 0x100
MSG_NOSIGNAL = 0x4000
MSG_WAITFORONE = 0x10000
MSG_CMSG_CLOEXEC = 0x40000000

SOL_SOCKET = 1
SCM_RIGHTS = 1
SO_ERROR = 4
SO_RCVTIMEO = 20
SO_SNDTIMEO = 21
#: Linux takes at most this many descriptors in one ``SCM_RIGHTS`` message.
SCM_MAX_FD = 253

#: ``sizeof(struct sockaddr_storage)``: the longest address a call copies in or out.
SOCKADDR_MAX = 128
#: ``offsetof(struct sockaddr_un, sun_path)`` and ``sizeof(struct sockaddr_un)``.
SUN_PATH_OFFSET = 2
SOCKADDR_UN_SIZE = 110

CMSG_HEAD = struct.Struct("<Qii")  # cmsg_len, cmsg_level, cmsg_type


def cmsg_align(n: int) -> int:
    """``CMSG_ALIGN``: control messages are laid out on 8-byte boundaries."""
    return (n + 7) & ~7


_NR = {name: NUMBERS[name] for name in ("sendmsg", "recvmsg", "accept4", "getsockname", "getpeername", "kcmp")}
_KCMP_FILE = 0


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_void_p),
        ("namelen", ctypes.c_uint32),
        ("iov", ctypes.c_void_p),
        ("iovlen", ctypes.c_size_t),
        ("control", ctypes.c_void_p),
        ("controllen", ctypes.c_size_t),
        ("flags", ctypes.c_int),
    ]


# ------------------------------------------------------------- the run's tag

_TAGS: weakref.WeakKeyDictionary[object, bytes] = weakref.WeakKeyDictionary()
_TAG_COUNTER = itertools.count(1)


def run_tag(run: object) -> bytes:
    """The prefix of the abstract names of one run (see the module docstring)."""
    tag = _TAGS.get(run)
    if tag is None:
        tag = _TAGS[run] = b"aioumm.%x.%x/" % (os.getpid(), next(_TAG_COUNTER))
    return tag


#: Guest names of bound ``AF_UNIX`` sockets, by the host name they were bound with.
_GUEST_NAMES: dict[bytes, bytes] = {}


def remember_name(host_path: bytes, guest_addr: bytes) -> None:
    """Record that the host path ``host_path`` is what the guest bound as ``guest_addr``."""
    _GUEST_NAMES[host_path] = guest_addr


def guest_sockaddr(raw: bytes, tag: bytes, host_to_guest: Callable[[str], str | None] | None = None) -> bytes:
    """The guest's view of an address the host gave (``AF_UNIX`` names translated back).

    ``host_to_guest`` maps a host path to the guest's path (None when it lies
    outside the guest's root); it is used for names no guest bound.
    """
    if len(raw) <= SUN_PATH_OFFSET or struct.unpack_from("<H", raw)[0] != AF_UNIX:
        return raw
    path = raw[SUN_PATH_OFFSET:]
    if path[0] == 0:
        prefix = b"\0" + tag
        if path.startswith(prefix):
            return raw[:SUN_PATH_OFFSET] + b"\0" + path[len(prefix) :]
        return raw
    host_path = path.split(b"\0", 1)[0]
    known = _GUEST_NAMES.get(host_path)
    if known is not None:
        return known
    if host_to_guest is not None:
        guest = host_to_guest(os.fsdecode(host_path))
        if guest is not None:
            return raw[:SUN_PATH_OFFSET] + os.fsencode(guest) + b"\0"
    return raw


# ------------------------------------------------------------ host calls


class Unusable:
    """A guest buffer the guest may not use that way: the host call gets memory that faults.

    Linux checks a call's other arguments (the address, the socket's state, a
    datagram's size) before it touches the data, and a receive takes the
    datagram before it finds the buffer bad.  Handing the host call a range
    that faults in the controller the same way (a ``PROT_NONE`` reservation,
    never anything else) makes the host do all of that in Linux's order.
    """

    def __init__(self, length: int) -> None:
        self.length = length

    def __len__(self) -> int:
        return self.length


#: Buffers for the host calls: guest memory, or a range that faults.
Buffers = Sequence[memoryview | Unusable]

#: The reservation's length: longer than any one call's data (``MAX_RW_COUNT``).
_FAULT_AREA_SIZE = 0x80000000
_FAULT_AREA = 0


def _fault_area() -> int:
    """A ``PROT_NONE`` reservation as long as any guest buffer (address space only)."""
    global _FAULT_AREA
    if not _FAULT_AREA:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
        addr = libc.mmap(None, _FAULT_AREA_SIZE, 0, 0x22 | 0x4000, -1, 0)  # MAP_PRIVATE|ANONYMOUS|NORESERVE
        if addr is None or addr == ctypes.c_void_p(-1).value:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        _FAULT_AREA = int(addr)
    return _FAULT_AREA


def _buffer_address(view: memoryview | Unusable, keep: list[object]) -> int:
    """The address of ``view``'s bytes for a host call (a copy if it is read-only)."""
    if len(view) == 0:
        return 0
    if isinstance(view, Unusable):
        return _fault_area()
    if not view.readonly:
        c = (ctypes.c_char * len(view)).from_buffer(view)
    else:
        c = ctypes.create_string_buffer(bytes(view), len(view))
    keep.append(c)
    return ctypes.addressof(c)


def _iovec_array(views: Buffers, keep: list[object]) -> tuple[int, int]:
    arr = (_Iovec * max(len(views), 1))()
    for i, v in enumerate(views):
        arr[i].base = _buffer_address(v, keep)
        arr[i].len = len(v)
    keep.append(arr)
    return ctypes.addressof(arr), len(views)


def host_sendmsg(fd: int, views: Buffers, name: bytes | None, control: bytes, flags: int) -> int:
    """The host's ``sendmsg``; raises :class:`OSError`."""
    keep: list[object] = []
    try:
        msg = _Msghdr()
        msg.iov, msg.iovlen = _iovec_array(views, keep)
        if name is not None:
            nbuf = ctypes.create_string_buffer(name, max(len(name), 1))
            keep.append(nbuf)
            msg.name, msg.namelen = ctypes.addressof(nbuf), len(name)
        if control:
            cbuf = ctypes.create_string_buffer(control, len(control))
            keep.append(cbuf)
            msg.control, msg.controllen = ctypes.addressof(cbuf), len(control)
        return host_syscall(_NR["sendmsg"], fd, ctypes.addressof(msg), flags)
    finally:
        keep.clear()  # let go of the guest memory's buffer exports at once


def host_recvmsg(
    fd: int, views: Buffers, name_room: int, control_room: int, flags: int
) -> tuple[int, bytes | None, bytes, int]:
    """The host's ``recvmsg``: ``(bytes, address or None, control, msg_flags)``; raises :class:`OSError`."""
    keep: list[object] = []
    try:
        msg = _Msghdr()
        msg.iov, msg.iovlen = _iovec_array(views, keep)
        nbuf = ctypes.create_string_buffer(max(name_room, 1))
        cbuf = ctypes.create_string_buffer(max(control_room, 1))
        if name_room:
            msg.name, msg.namelen = ctypes.addressof(nbuf), name_room
        if control_room:
            msg.control, msg.controllen = ctypes.addressof(cbuf), control_room
        n = host_syscall(_NR["recvmsg"], fd, ctypes.addressof(msg), flags)
        name = nbuf.raw[: min(msg.namelen, name_room)] if name_room else None
        return n, name, cbuf.raw[: msg.controllen] if control_room else b"", msg.flags
    finally:
        keep.clear()


def host_getname(fd: int, *, peer: bool) -> bytes:
    """The host's ``getsockname`` (``getpeername``) as raw bytes; raises :class:`OSError`."""
    buf = ctypes.create_string_buffer(SOCKADDR_MAX)
    length = ctypes.c_uint32(SOCKADDR_MAX)
    host_syscall(_NR["getpeername" if peer else "getsockname"], fd, buf, ctypes.addressof(length))
    return buf.raw[: min(length.value, SOCKADDR_MAX)]


def host_accept(fd: int) -> tuple[int, bytes]:
    """The host's ``accept4`` (non-blocking, close-on-exec): ``(fd, peer address)``."""
    buf = ctypes.create_string_buffer(SOCKADDR_MAX)
    length = ctypes.c_uint32(SOCKADDR_MAX)
    new = host_syscall(_NR["accept4"], fd, buf, ctypes.addressof(length), SOCK_NONBLOCK | SOCK_CLOEXEC)
    return new, buf.raw[: min(length.value, SOCKADDR_MAX)]


def same_description(a: int, b: int) -> bool:
    """Whether two host descriptors of the controller name one open file description."""
    pid = os.getpid()
    try:
        return host_syscall(_NR["kcmp"], pid, pid, _KCMP_FILE, a, b) == 0
    except OSError:
        return False


# ------------------------------------------------------------ the socket


class SocketFile(OpenFile):
    """A guest socket: a non-blocking host socket and the guest's view of it."""

    def __init__(self, host_fd: int, family: int, sock_type: int, *, nonblocking: bool = False) -> None:
        inode = os.fstat(host_fd).st_ino
        super().__init__(host_fd, f"socket:[{inode}]", flags=os.O_RDWR)
        #: The host socket's inode (how ``sock_diag`` names it).
        self.inode = inode
        #: The guest's ``O_NONBLOCK`` (the host socket is always non-blocking).
        self.nonblocking = nonblocking
        self.family = family
        #: ``SOCK_STREAM``, ``SOCK_DGRAM``, ``SOCK_SEQPACKET``...
        self.sock_type = sock_type
        #: The directory an ``AF_UNIX`` path was bound in (its host name goes through it).
        self.bound_dir = -1
        #: The host name it listens on (``AF_UNIX``), for the peer credentials of its clients.
        self.listen_name: bytes | None = None

    def set_status_flags(self, flags: int, mask: int) -> None:
        """``F_SETFL``: the host socket stays non-blocking; the guest's flag is recorded."""
        super().set_status_flags(flags | os.O_NONBLOCK, mask)
        if mask & os.O_NONBLOCK:
            self.nonblocking = bool(flags & os.O_NONBLOCK)

    async def readv(self, views: Sequence[memoryview], offset: int | None = None) -> int:
        """``read``/``readv`` on a socket: ``recv`` without flags."""
        return (await sock_recv(self, views, want_flags=False))[0]

    async def writev(self, views: Sequence[memoryview], offset: int | None = None) -> int:
        """``write``/``writev`` on a socket: ``send`` without flags."""
        return await sock_send(self, views)

    def close(self) -> None:
        """Close the host socket and the directory its name goes through."""
        if self.host_fd >= 0:
            _PEER_PIDS.pop(self.inode, None)
            if self.listen_name is not None:
                _LISTENERS.pop(self.listen_name, None)
        super().close()
        if self.bound_dir >= 0:
            os.close(self.bound_dir)
            self.bound_dir = -1


# ------------------------------------------------------- peer credentials
#
# SO_PEERCRED: Linux tells the pid of the process that made the peer's end
# (socketpair), connected it (the server side sees the client) or listened on
# it (the client sees the server), as it was at that moment.  Every guest socket
# is the controller's on the host, so the host tells the controller's pid; the
# guest pid is recorded instead, by the inode of the socket whose peer it names,
# and the peer of a socket is found with sock_diag (UNIX_DIAG_PEER).

#: The guest pid SO_PEERCRED names, by the inode of the socket it describes.
_PEER_PIDS: dict[int, int] = {}
#: The guest pid of each AF_UNIX listener when it started listening, by its host name.
_LISTENERS: dict[bytes, int] = {}

_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_UNIX_DIAG_REQ = struct.Struct("<BBHIIIII")  # family, protocol, pad, states, ino, show, cookie
_UDIAG_SHOW_PEER = 0x4
_UNIX_DIAG_PEER = 2


def set_peer_pid(inode: int, pid: int) -> None:
    """Record that SO_PEERCRED of the socket ``inode`` names guest ``pid``."""
    _PEER_PIDS[inode] = pid


def listening(file: SocketFile, pid: int) -> None:
    """An ``AF_UNIX`` socket listens: its clients' peer is ``pid``."""
    try:
        name = host_getname(file.host_fd, peer=False)
    except OSError:
        return
    file.listen_name = name
    _LISTENERS[name] = pid


def connected(file: SocketFile, pid: int) -> None:
    """An ``AF_UNIX`` stream or record socket connected: the server's end names ``pid``,
    this end names the listener's process."""
    set_peer_pid(file.inode, pid)
    try:
        listener = _LISTENERS.get(host_getname(file.host_fd, peer=True))
        server_end = peer_inode(file.inode)
    except OSError:
        return
    if listener is not None and server_end is not None:
        set_peer_pid(server_end, listener)


def peer_inode(inode: int) -> int | None:
    """The inode of the other end of the ``AF_UNIX`` socket ``inode`` (sock_diag)."""
    import socket as pysocket

    req = _UNIX_DIAG_REQ.pack(AF_UNIX, 0, 0, 0xFFFFFFFF, inode, _UDIAG_SHOW_PEER, 0xFFFFFFFF, 0xFFFFFFFF)
    head = _NLMSG_HEAD.pack(_NLMSG_HEAD.size + len(req), _SOCK_DIAG_BY_FAMILY, 1, 1, 0)  # NLM_F_REQUEST
    with pysocket.socket(pysocket.AF_NETLINK, pysocket.SOCK_DGRAM | pysocket.SOCK_CLOEXEC, _NETLINK_SOCK_DIAG) as nl:
        nl.send(head + req)
        data = nl.recv(4096)
    length, kind = _NLMSG_HEAD.unpack_from(data)[:2]
    if kind != _SOCK_DIAG_BY_FAMILY:
        return None  # NLMSG_ERROR: no such socket
    pos = _NLMSG_HEAD.size + 16  # struct unix_diag_msg, then attributes
    while pos + 4 <= min(length, len(data)):
        alen, atype = struct.unpack_from("<HH", data, pos)
        if atype == _UNIX_DIAG_PEER and alen >= 8:
            return int(struct.unpack_from("<I", data, pos + 4)[0])
        if alen < 4:
            break
        pos += (alen + 3) & ~3
    return None


def peer_pid(file: SocketFile, host_pid: int) -> int:
    """The pid SO_PEERCRED tells the guest, given what the host told."""
    if file.listen_name is not None and file.listen_name in _LISTENERS:
        return _LISTENERS[file.listen_name]  # a listener names itself, as it was at listen()
    if file.family == AF_UNIX:
        try:
            other = peer_inode(file.inode)
        except OSError:
            other = None
        if other is not None and other in _PEER_PIDS:
            return _PEER_PIDS[other]
    # The controller made the peer but no guest is known for it: no pid, as Linux
    # says for a peer without one.  Any other process is the host's to name.
    return 0 if host_pid == os.getpid() else host_pid


# -------------------------------------------- data on any socket descriptor
#
# These take any OpenFile that is a socket: the guest's own (SocketFile) and
# one it inherited from the runner's caller, whose host descriptor may be in
# blocking mode (every call here says MSG_DONTWAIT to the host, so that mode
# never matters).


def socket_type(file: OpenFile) -> int:
    """``SO_TYPE`` of a socket file (``SOCK_STREAM``...)."""
    if isinstance(file, SocketFile):
        return file.sock_type
    return _int_option(file.host_fd, 3)  # SO_TYPE


def socket_family(file: OpenFile) -> int:
    """``SO_DOMAIN`` of a socket file (``AF_UNIX``...)."""
    if isinstance(file, SocketFile):
        return file.family
    return _int_option(file.host_fd, 39)  # SO_DOMAIN


def _raw_option(fd: int, option: int, size: int) -> bytes:
    buf = ctypes.create_string_buffer(size)
    length = ctypes.c_uint32(size)
    host_syscall(NUMBERS["getsockopt"], fd, SOL_SOCKET, option, buf, ctypes.addressof(length))
    return buf.raw[: length.value]


def _int_option(fd: int, option: int) -> int:
    return int(struct.unpack("<i", _raw_option(fd, option, 4).ljust(4, b"\0"))[0])


def socket_error(fd: int) -> int:
    """``SO_ERROR``: the socket's pending error, cleared by reading it."""
    return _int_option(fd, SO_ERROR)


def _timeout(fd: int, option: int) -> float | None:
    """``SO_RCVTIMEO``/``SO_SNDTIMEO`` in seconds (None: wait for ever)."""
    try:
        sec, usec = struct.unpack("<qq", _raw_option(fd, option, 16).ljust(16, b"\0"))
    except OSError:
        return None
    total = sec + usec / 1e6
    return total if total > 0 else None


async def wait_ready(file: OpenFile, *, write: bool, deadline: list[float]) -> None:
    """Wait until the host socket is ready; ``EAGAIN`` when the socket's timeout runs out.

    ``deadline`` holds the call's deadline once its first wait worked it out.
    """
    if not deadline:
        t = _timeout(file.host_fd, SO_SNDTIMEO if write else SO_RCVTIMEO)
        deadline.append(float("inf") if t is None else time.monotonic() + t)
    left = deadline[0] - time.monotonic()
    if left == float("inf"):
        await wait_fd(file.host_fd, write=write)
        return
    if left <= 0:
        raise SyscallError(errno.EAGAIN)
    try:
        await asyncio.wait_for(wait_fd(file.host_fd, write=write), left)
    except TimeoutError:
        raise SyscallError(errno.EAGAIN) from None


_NLMSG_HEAD = struct.Struct("<IHHII")  # nlmsg_len, nlmsg_type, nlmsg_flags, nlmsg_seq, nlmsg_pid
_RTM_BASE = 16
_RTM_GET = 2


def netlink_only_asks(data: bytes) -> bool:
    """Whether every routing message in ``data`` is a request that reads (``RTM_GET*``).

    rtnetlink message types come in fours from ``RTM_BASE``: new, delete, get, set.
    Control messages below ``RTM_BASE`` (``NLMSG_NOOP``...) change nothing either.
    """
    pos = 0
    while pos + _NLMSG_HEAD.size <= len(data):
        length, kind = _NLMSG_HEAD.unpack_from(data, pos)[:2]
        if kind >= _RTM_BASE and (kind - _RTM_BASE) % 4 != _RTM_GET:
            return False
        if length < _NLMSG_HEAD.size:
            break  # malformed: the host refuses it
        pos += (length + 3) & ~3
    return True


async def sock_send(
    file: OpenFile, views: Buffers, name: bytes | None = None, control: bytes = b"", flags: int = 0
) -> int:
    """Send as a blocking (or not) ``sendmsg`` would; ``EPIPE`` raises :class:`BrokenPipeError`."""
    if isinstance(file, SocketFile) and file.family == AF_NETLINK:
        data = b"".join(bytes(v) for v in views if isinstance(v, memoryview))
        if not netlink_only_asks(data):
            raise SyscallError(errno.EPERM)
    blocking = not (file.guest_nonblocking() or flags & MSG_DONTWAIT)
    stream = socket_type(file) == SOCK_STREAM
    host_flags = (flags | MSG_DONTWAIT | MSG_NOSIGNAL) & 0xFFFFFFFF
    total = sum(len(v) for v in views)
    # Plain data on a guest's own socket (non-blocking on the host) is a writev: a
    # few microseconds less than building a msghdr (the controller ignores SIGPIPE).
    plain = _plain(file, views) and name is None and not control and not flags & ~(MSG_DONTWAIT | MSG_NOSIGNAL)
    done = 0
    deadline: list[float] = []
    while True:
        try:
            if plain:
                done += os.writev(file.host_fd, _skip(views, done))  # type: ignore[arg-type]
            else:
                done += host_sendmsg(file.host_fd, _skip(views, done), name, b"" if done else control, host_flags)
        except BlockingIOError:
            if not blocking:
                if done:
                    return done
                raise
        except OSError:
            if done:
                return done
            raise
        else:
            # A stream takes all of a blocking send, in as many pieces as it needs;
            # a datagram or record goes whole or not at all.
            if done >= total or not blocking or not stream:
                return done
            continue
        try:
            await wait_ready(file, write=True, deadline=deadline)
        except SyscallError:
            if done:
                return done
            raise


async def sock_recv(
    file: OpenFile,
    views: Buffers,
    name_room: int = 0,
    control_room: int = 0,
    flags: int = 0,
    *,
    want_flags: bool = True,
) -> tuple[int, bytes | None, bytes, int]:
    """Receive as a blocking (or not) ``recvmsg`` would: ``(bytes, address, control, msg_flags)``.

    ``want_flags``: the caller reports ``msg_flags`` (``recvmsg``); without it a plain
    receive is a ``readv``, and ``msg_flags`` comes back 0.
    """
    blocking = not (file.guest_nonblocking() or flags & MSG_DONTWAIT)
    plain = (
        not want_flags
        and _plain(file, views)
        and not name_room
        and not control_room
        and not flags & ~(MSG_DONTWAIT | MSG_WAITALL | MSG_CMSG_CLOEXEC)
    )
    total = sum(len(v) for v in views)
    wait_all = bool(flags & MSG_WAITALL) and blocking and not flags & MSG_PEEK and socket_type(file) == SOCK_STREAM
    host_flags = ((flags & ~MSG_WAITALL) | MSG_DONTWAIT | MSG_CMSG_CLOEXEC) & 0xFFFFFFFF
    done = 0
    first: tuple[int, bytes | None, bytes, int] | None = None
    deadline: list[float] = []
    while True:
        try:
            # Address and control come with the first piece only.
            rooms = (name_room, control_room) if first is None else (0, 0)
            got: tuple[int, bytes | None, bytes, int]
            if plain:
                got = (os.readv(file.host_fd, _skip(views, done)), None, b"", 0)  # type: ignore[arg-type]
            else:
                got = host_recvmsg(file.host_fd, _skip(views, done), *rooms, host_flags)
        except BlockingIOError:
            if not blocking:
                if first is not None:
                    return first
                raise
        except OSError:
            if first is not None:
                return first
            raise
        else:
            done += got[0]
            first = (done, got[1], got[2], got[3]) if first is None else (done, *first[1:])
            if not wait_all or got[0] == 0 or done >= total:
                return first
            continue
        try:
            await wait_ready(file, write=False, deadline=deadline)
        except SyscallError:
            if first is not None:
                return first
            raise


def _plain(file: OpenFile, views: Buffers) -> bool:
    """Data the host's ``readv``/``writev`` can move: guest memory, on a socket that never blocks the host."""
    return (
        isinstance(file, SocketFile) and file.family != AF_NETLINK and not any(isinstance(v, Unusable) for v in views)
    )


def _skip(views: Buffers, n: int) -> list[memoryview | Unusable]:
    """``views`` without their first ``n`` bytes."""
    out: list[memoryview | Unusable] = []
    for v in views:
        if n >= len(v):
            n -= len(v)
            continue
        if isinstance(v, Unusable):
            out.append(Unusable(len(v) - n))  # still the start of the area: it faults at once
        else:
            out.append(v[n:] if n else v)
        n = 0
    return out


def adopt_host_fd(host_fd: int) -> OpenFile:
    """An :class:`OpenFile` for a host descriptor that arrived over a socket."""
    mode = os.fstat(host_fd).st_mode
    if stat.S_ISSOCK(mode):
        family, sock_type = _int_option(host_fd, 39), _int_option(host_fd, 3)  # SO_DOMAIN, SO_TYPE
        # Its own O_NONBLOCK is unknown here (a guest's socket is non-blocking on the
        # host whatever the guest chose): blocking, as a new socket is.
        os.set_blocking(host_fd, False)
        return SocketFile(host_fd, family, sock_type)
    # Its access mode is the host description's: a pipe's write end stays one.
    return OpenFile(host_fd, "", flags=fcntl.fcntl(host_fd, fcntl.F_GETFL) & (os.O_ACCMODE | os.O_APPEND | os.O_PATH))


#: Files sent with ``SCM_RIGHTS`` (see the module docstring), looked for on receipt.
_SENT: weakref.WeakSet[OpenFile] = weakref.WeakSet()


def sent_in_flight(file: OpenFile) -> None:
    """Remember that ``file`` went into a socket (it may come out of one)."""
    _SENT.add(file)


def received_file(host_fd: int) -> OpenFile:
    """The :class:`OpenFile` for a descriptor received with ``SCM_RIGHTS``.

    The sent file itself when it is still open (``host_fd`` is then closed);
    otherwise a new one that owns ``host_fd``.
    """
    for file in list(_SENT):
        if file.host_fd >= 0 and same_description(file.host_fd, host_fd):
            os.close(host_fd)
            return file
    try:
        return adopt_host_fd(host_fd)
    except BaseException:
        os.close(host_fd)
        raise

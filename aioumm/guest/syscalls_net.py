"""The socket calls: ``socket``, ``bind``, ``connect``, ``accept``, ``sendmsg``...

Imported, and so registered, when a guest first makes one of these calls (see :mod:`.syscalls`);
the socket layer itself (host sockets, names, waits, descriptor passing) is
:mod:`.sockets`.  Every guest pointer and length is checked as Linux checks it:
an address longer than ``sockaddr_storage`` or negative is ``EINVAL``, memory
the guest may not read or write is ``EFAULT``, a descriptor that is not a
socket ``ENOTSOCK``.  Output addresses are checked before the call does its
work, so a bad pointer never costs the guest a connection or a datagram.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat
import struct
import time
from collections.abc import Awaitable, Iterator

from .errors import GuestFault, SyscallError
from .files import Loc, OpenFile, host_syscall
from .process import GuestProcess
from .signals import SI_USER, SigInfo
from .sockets import (
    AF_NETLINK,
    AF_UNIX,
    CMSG_HEAD,
    FAMILIES,
    MSG_CMSG_CLOEXEC,
    MSG_CTRUNC,
    MSG_DONTWAIT,
    MSG_NOSIGNAL,
    MSG_WAITFORONE,
    NETLINK_ROUTE,
    SCM_MAX_FD,
    SCM_RIGHTS,
    SOCK_CLOEXEC,
    SOCK_NONBLOCK,
    SOCK_SEQPACKET,
    SOCK_STREAM,
    SOCK_TYPE_MASK,
    SOCKADDR_MAX,
    SOCKADDR_UN_SIZE,
    SOL_SOCKET,
    SUN_PATH_OFFSET,
    SocketFile,
    Unusable,
    cmsg_align,
    connected,
    guest_sockaddr,
    host_accept,
    host_getname,
    listening,
    peer_pid,
    received_file,
    remember_name,
    run_tag,
    sent_in_flight,
    set_peer_pid,
    sock_recv,
    sock_send,
    socket_error,
    socket_family,
    socket_type,
    wait_ready,
)
from .syscalls import MAX_RW_COUNT, UIO_MAXIOV, s32, s64, syscall
from .table import NUMBERS

__all__: list[str] = []

_I32 = struct.Struct("<i")
_U32 = struct.Struct("<I")
_FAMILY = struct.Struct("<H")
_IOVEC = struct.Struct("<QQ")
#: ``struct user_msghdr``: name, namelen, iov, iovlen, control, controllen, flags.
_MSGHDR = struct.Struct("<QI4xQQQQi4x")
#: ``struct mmsghdr``: a msghdr and the byte count of its message.
_MMSGHDR_SIZE = _MSGHDR.size + 8
_TIMESPEC = struct.Struct("<qq")
_NAMELEN_OFFSET = 8
_CONTROLLEN_OFFSET = 40
_FLAGS_OFFSET = 48
#: The most control data one message may carry (Linux's ``optmem_max`` is smaller).
_CONTROL_MAX = 1 << 17
SIGPIPE = 13

#: Socket options passed to the host socket, by level: plain values, no pointers
#: (an option holding a pointer, like a BPF filter, would name controller memory).
_OPTIONS: dict[int, frozenset[int]] = {
    SOL_SOCKET: frozenset(
        {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 29, 30, 35, 38, 39, 40, 42, 46}
        | {49, 57, 66, 67}
    ),
    0: frozenset({1, 2, 4, 8, 10, 11, 12, 13, 14, 15, 24, 32, 33, 34, 35, 36}),  # IPPROTO_IP
    6: frozenset({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 18, 23}),  # IPPROTO_TCP
    41: frozenset({16, 17, 18, 19, 20, 21, 23, 24, 25, 26, 49, 50, 66, 67}),  # IPPROTO_IPV6
    270: frozenset({1, 2, 3, 4, 5, 8, 10, 11, 12}),  # SOL_NETLINK: groups, acks, strict checks
}
_SO_PEERCRED = 17
#: ``getsockopt`` hands back at most this many bytes (``TCP_INFO`` is the longest asked for).
_OPTION_MAX = 512


def _fail(err: int) -> SyscallError:
    return SyscallError(err)


def _socket(p: GuestProcess, fd: int) -> OpenFile:
    file = p.fds.get(s32(fd))
    if not stat.S_ISSOCK(file.mode):
        raise _fail(errno.ENOTSOCK)
    return file


def _sigpipe(p: GuestProcess, file: OpenFile, flags: int) -> None:
    """``SIGPIPE`` for a send on a dead stream, as Linux sends it (unless ``MSG_NOSIGNAL``)."""
    if not flags & MSG_NOSIGNAL and socket_type(file) in (SOCK_STREAM, SOCK_SEQPACKET):
        p.signals.send(SIGPIPE, SigInfo(SIGPIPE, SI_USER, p.pid, p.uid))


# ------------------------------------------------------------- addresses


def _read_sockaddr(p: GuestProcess, addr: int, length: int) -> bytes:
    """An address the guest passes in (``move_addr_to_kernel``)."""
    n = s32(length)
    if n < 0 or n > SOCKADDR_MAX:
        raise _fail(errno.EINVAL)
    return p.mm.read(addr, n) if n else b""


def _write_sockaddr(p: GuestProcess, addr: int, lenp: int, raw: bytes, *, optional: bool = True) -> None:
    """Store an address the call gives back (``move_addr_to_user``): cut to the room, full length."""
    if not addr and optional:
        return
    room = _I32.unpack(p.mm.read(lenp, 4))[0]
    if room < 0:
        raise _fail(errno.EINVAL)
    if room and raw:
        p.mm.write(addr, raw[:room])
    p.mm.write(lenp, _I32.pack(len(raw)))


def _guest_view(p: GuestProcess, raw: bytes) -> bytes:
    return guest_sockaddr(raw, run_tag(p.kernel), p.vfs.guest_path_of_host)


def _unix_parts(raw: bytes) -> tuple[bytes, bool] | None:
    """``(name, abstract)`` of an ``AF_UNIX`` address that names something, else None."""
    if not SUN_PATH_OFFSET < len(raw) <= SOCKADDR_UN_SIZE or _FAMILY.unpack_from(raw)[0] != AF_UNIX:
        return None
    name = raw[SUN_PATH_OFFSET:]
    if name[0] == 0:
        return name[1:], True
    return name.split(b"\0", 1)[0], False


def _abstract(p: GuestProcess, name: bytes) -> bytes:
    host = struct.pack("<H", AF_UNIX) + b"\0" + run_tag(p.kernel) + name
    if len(host) > SOCKADDR_UN_SIZE:
        p.note = "abstract name too long with the run's prefix"
        raise _fail(errno.EINVAL)
    return host


class _Target:
    """The host address for a ``connect``/``sendto`` target (and the descriptor it goes through)."""

    def __init__(self, p: GuestProcess, file: OpenFile, raw: bytes) -> None:
        self.fd = -1
        self.raw = raw
        parts = _unix_parts(raw) if socket_family(file) == AF_UNIX else None
        if parts is None:
            return
        name, abstract = parts
        if abstract:
            self.raw = _abstract(p, name)
            return
        # The socket file itself, looked up inside the root (symlinks followed there).
        self.fd = p.vfs.open(p.vfs.locate(os.fsdecode(name)), os.O_PATH)
        self.raw = struct.pack("<H", AF_UNIX) + f"/proc/self/fd/{self.fd}".encode() + b"\0"

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@contextlib.contextmanager
def _host_nonblocking(file: OpenFile) -> Iterator[None]:
    """Make sure a host ``connect``/``accept`` cannot block the loop.

    A guest's own socket is non-blocking on the host already; one it inherited
    from the runner's caller may not be, and is so only for the call.
    """
    if isinstance(file, SocketFile) or not os.get_blocking(file.host_fd):
        yield
        return
    os.set_blocking(file.host_fd, False)
    try:
        yield
    finally:
        os.set_blocking(file.host_fd, True)


# ------------------------------------------------------------ socket, pair


def _socket_args(domain: int, type_: int) -> tuple[int, int, int]:
    family, t = s32(domain), s32(type_)
    if t & ~(SOCK_TYPE_MASK | SOCK_NONBLOCK | SOCK_CLOEXEC):
        raise _fail(errno.EINVAL)
    if family not in FAMILIES:
        raise _fail(errno.EAFNOSUPPORT)
    return family, t & SOCK_TYPE_MASK, t


def _protocol(family: int, protocol: int) -> int:
    proto = s32(protocol)
    if family == AF_NETLINK and proto != NETLINK_ROUTE:
        raise _fail(errno.EPROTONOSUPPORT)  # only the routing family is offered
    return proto


def _install_socket(p: GuestProcess, host: int, family: int, sock_type: int, flags: int) -> int:
    try:
        file = SocketFile(host, family, sock_type, nonblocking=bool(flags & SOCK_NONBLOCK))
    except BaseException:
        os.close(host)
        raise
    try:
        return p.fds.install(file, cloexec=bool(flags & SOCK_CLOEXEC))
    except SyscallError:
        file.close()
        raise


@syscall("socket")
def sys_socket(p: GuestProcess, domain: int, type_: int, protocol: int, *_: int) -> int:
    family, base, flags = _socket_args(domain, type_)
    proto = _protocol(family, protocol)
    host = host_syscall(NUMBERS["socket"], family, base | SOCK_NONBLOCK | SOCK_CLOEXEC, proto)
    return _install_socket(p, host, family, base, flags)


@syscall("socketpair")
def sys_socketpair(p: GuestProcess, domain: int, type_: int, protocol: int, sv: int, *_: int) -> int:
    family, base, flags = _socket_args(domain, type_)
    p.mm.views(sv, 8, write=True)  # EFAULT before any descriptor exists
    pair = (ctypes.c_int * 2)()
    proto = _protocol(family, protocol)
    host_syscall(NUMBERS["socketpair"], family, base | SOCK_NONBLOCK | SOCK_CLOEXEC, proto, ctypes.addressof(pair))
    a = _install_socket(p, pair[0], family, base, flags)
    try:
        b = _install_socket(p, pair[1], family, base, flags)
    except SyscallError:
        p.fds.close(a)
        raise
    for end in (a, b):
        sock = p.fds.get(end)
        if isinstance(sock, SocketFile):
            set_peer_pid(sock.inode, p.pid)  # both ends were made by this process
    p.mm.write(sv, struct.pack("<ii", a, b))
    return 0


# --------------------------------------------------- bind, listen, connect


@syscall("bind")
def sys_bind(p: GuestProcess, fd: int, addr: int, length: int, *_: int) -> int:
    file = _socket(p, fd)
    raw = _read_sockaddr(p, addr, length)
    parts = _unix_parts(raw) if socket_family(file) == AF_UNIX else None
    if parts is None:
        return host_syscall(NUMBERS["bind"], file.host_fd, raw, len(raw))
    name, abstract = parts
    if abstract:
        host = _abstract(p, name)
        return host_syscall(NUMBERS["bind"], file.host_fd, host, len(host))
    # A socket bound already: the host says so (EINVAL), after it found the name free.
    return _bind_path(p, file, name)


def _bind_path(p: GuestProcess, file: OpenFile, name: bytes) -> int:
    """Bind an ``AF_UNIX`` path: the socket file is made in its directory inside the root."""
    path = os.fsdecode(name)
    loc = p.vfs.locate(path)
    head, _, last = loc.path.rpartition("/")
    if not head:
        head = "/" if loc.path.startswith("/") else "."
    dfd = p.vfs.open(Loc(loc.dirfd, head), os.O_PATH | os.O_DIRECTORY)
    try:
        host_name = f"/proc/self/fd/{dfd}/{last}".encode()
        if len(host_name) >= SOCKADDR_UN_SIZE - SUN_PATH_OFFSET:
            p.note = "the name is too long to bind through its directory"
            raise _fail(errno.ENAMETOOLONG)
        host = struct.pack("<H", AF_UNIX) + host_name + b"\0"
        # The socket file's mode follows the umask of the process that binds: the guest's.
        old = os.umask(p.vfs.umask)
        try:
            host_syscall(NUMBERS["bind"], file.host_fd, host, len(host))
        finally:
            os.umask(old)
    except BaseException:
        os.close(dfd)
        raise
    if isinstance(file, SocketFile):
        file.bound_dir = dfd
    else:
        os.close(dfd)
    remember_name(host_name, struct.pack("<H", AF_UNIX) + name + b"\0")
    return 0


@syscall("listen")
def sys_listen(p: GuestProcess, fd: int, backlog: int, *_: int) -> int:
    file = _socket(p, fd)
    host_syscall(NUMBERS["listen"], file.host_fd, s32(backlog))
    if isinstance(file, SocketFile) and file.family == AF_UNIX:
        listening(file, p.pid)
    return 0


@syscall("connect")
def sys_connect(p: GuestProcess, fd: int, addr: int, length: int, *_: int) -> int | Awaitable[int]:
    file = _socket(p, fd)
    target = _Target(p, file, _read_sockaddr(p, addr, length))
    try:
        with _host_nonblocking(file):
            host_syscall(NUMBERS["connect"], file.host_fd, target.raw, len(target.raw))
    except OSError as exc:
        blocking = not file.guest_nonblocking()
        if blocking and exc.errno == errno.EINPROGRESS:
            target.close()
            return _connect_wait(file)
        if blocking and exc.errno == errno.EAGAIN and socket_family(file) == AF_UNIX:
            return _connect_retry(p, file, target)  # the listener's backlog is full: wait for room
        target.close()
        raise
    target.close()
    _connected(p, file)
    return 0


def _connected(p: GuestProcess, file: OpenFile) -> None:
    if isinstance(file, SocketFile) and file.family == AF_UNIX and file.sock_type in (SOCK_STREAM, SOCK_SEQPACKET):
        connected(file, p.pid)


async def _connect_wait(file: OpenFile) -> int:
    """A blocking TCP connect: wait until the host socket is writable, then its verdict."""
    deadline: list[float] = []
    try:
        await wait_ready(file, write=True, deadline=deadline)
    except SyscallError:
        raise _fail(errno.EINPROGRESS) from None  # SO_SNDTIMEO ran out, as Linux says it
    err = socket_error(file.host_fd)
    if err:
        raise OSError(err, os.strerror(err))
    return 0


async def _connect_retry(p: GuestProcess, file: OpenFile, target: _Target) -> int:
    import asyncio

    try:
        while True:
            await asyncio.sleep(0.005)
            try:
                with _host_nonblocking(file):
                    host_syscall(NUMBERS["connect"], file.host_fd, target.raw, len(target.raw))
                _connected(p, file)
                return 0
            except BlockingIOError:
                continue
    finally:
        target.close()


def _accept(p: GuestProcess, fd: int, addr: int, lenp: int, flags: int) -> Awaitable[int]:
    p.fds.get(s32(fd))
    if flags & ~(SOCK_NONBLOCK | SOCK_CLOEXEC):
        raise _fail(errno.EINVAL)
    file = _socket(p, fd)

    async def run() -> int:
        deadline: list[float] = []
        while True:
            try:
                with _host_nonblocking(file):
                    host, peer = host_accept(file.host_fd)
                break
            except BlockingIOError:
                if file.guest_nonblocking():
                    raise
            await wait_ready(file, write=False, deadline=deadline)
        new = _install_socket(p, host, socket_family(file), socket_type(file), flags)
        try:
            _write_sockaddr(p, addr, lenp, _guest_view(p, peer))
        except SyscallError:
            p.fds.close(new)  # Linux drops the connection it could not tell about
            raise
        return new

    return run()


@syscall("accept")
def sys_accept(p: GuestProcess, fd: int, addr: int, lenp: int, *_: int) -> Awaitable[int]:
    return _accept(p, fd, addr, lenp, 0)


@syscall("accept4")
def sys_accept4(p: GuestProcess, fd: int, addr: int, lenp: int, flags: int, *_: int) -> Awaitable[int]:
    return _accept(p, fd, addr, lenp, s32(flags) & 0xFFFFFFFF)


@syscall("shutdown")
def sys_shutdown(p: GuestProcess, fd: int, how: int, *_: int) -> int:
    file = _socket(p, fd)
    return host_syscall(NUMBERS["shutdown"], file.host_fd, s32(how))


@syscall("getsockname")
def sys_getsockname(p: GuestProcess, fd: int, addr: int, lenp: int, *_: int) -> int:
    return _getname(p, fd, addr, lenp, peer=False)


@syscall("getpeername")
def sys_getpeername(p: GuestProcess, fd: int, addr: int, lenp: int, *_: int) -> int:
    return _getname(p, fd, addr, lenp, peer=True)


def _getname(p: GuestProcess, fd: int, addr: int, lenp: int, *, peer: bool) -> int:
    file = _socket(p, fd)
    raw = host_getname(file.host_fd, peer=peer)
    _write_sockaddr(p, addr, lenp, _guest_view(p, raw), optional=False)
    return 0


# ----------------------------------------------------------------- options


@syscall("setsockopt")
def sys_setsockopt(p: GuestProcess, fd: int, level: int, name: int, val: int, length: int, *_: int) -> int:
    file = _socket(p, fd)
    n = s32(length)
    if n < 0:
        raise _fail(errno.EINVAL)
    lvl, opt = s32(level), s32(name)
    if opt not in _OPTIONS.get(lvl, frozenset()):
        p.note = "socket option not offered by aioumm"
        raise _fail(errno.ENOPROTOOPT)
    data = p.mm.read(val, min(n, _OPTION_MAX)) if n else b""
    return host_syscall(NUMBERS["setsockopt"], file.host_fd, lvl, opt, data or None, len(data))


@syscall("getsockopt")
def sys_getsockopt(p: GuestProcess, fd: int, level: int, name: int, val: int, lenp: int, *_: int) -> int:
    file = _socket(p, fd)
    room = _I32.unpack(p.mm.read(lenp, 4))[0]
    if room < 0:
        raise _fail(errno.EINVAL)
    lvl, opt = s32(level), s32(name)
    if opt not in _OPTIONS.get(lvl, frozenset()):
        p.note = "socket option not offered by aioumm"
        raise _fail(errno.ENOPROTOOPT)
    size = min(room, _OPTION_MAX)
    buf = ctypes.create_string_buffer(max(size, 1))
    got = ctypes.c_uint32(size)
    host_syscall(NUMBERS["getsockopt"], file.host_fd, lvl, opt, buf, ctypes.addressof(got))
    out = buf.raw[: min(got.value, size)]
    if lvl == SOL_SOCKET and opt == _SO_PEERCRED and isinstance(file, SocketFile) and len(out) >= 4:
        pid = peer_pid(file, _I32.unpack_from(out)[0])
        out = _I32.pack(pid) + out[4:]
    if out:
        p.mm.write(val, out)
    p.mm.write(lenp, _I32.pack(got.value))
    return 0


# ------------------------------------------------------------ send, receive


def _buffer(p: GuestProcess, buf: int, length: int, *, write: bool) -> list[memoryview | Unusable]:
    """Guest memory for data; a bad range is left for the host call to fault on (see :class:`Unusable`)."""
    if not length:
        return []
    try:
        return list(p.mm.views(buf, length, write=write))
    except GuestFault:
        return [Unusable(length)]


def _views(p: GuestProcess, buf: int, count: int, *, write: bool) -> list[memoryview | Unusable]:
    return _buffer(p, buf, min(count & 0xFFFFFFFFFFFFFFFF, MAX_RW_COUNT), write=write)


@syscall("sendto")
def sys_sendto(
    p: GuestProcess, fd: int, buf: int, count: int, flags: int, addr: int, length: int, *_: int
) -> Awaitable[int]:
    file = _socket(p, fd)
    views = _views(p, buf, count, write=False)
    target = _Target(p, file, _read_sockaddr(p, addr, length)) if addr else None
    fl = flags & 0xFFFFFFFF

    async def run() -> int:
        try:
            return await sock_send(file, views, target.raw if target is not None else None, b"", fl)
        except BrokenPipeError:
            _sigpipe(p, file, fl)
            raise
        finally:
            if target is not None:
                target.close()

    return run()


@syscall("recvfrom")
def sys_recvfrom(
    p: GuestProcess, fd: int, buf: int, count: int, flags: int, addr: int, lenp: int, *_: int
) -> Awaitable[int]:
    file = _socket(p, fd)
    views = _views(p, buf, count, write=True)
    fl = flags & 0xFFFFFFFF

    async def run() -> int:
        room = SOCKADDR_MAX if addr else 0
        n, name, _, _ = await sock_recv(file, views, room, 0, fl & ~MSG_CMSG_CLOEXEC, want_flags=False)
        if addr:
            _write_sockaddr(p, addr, lenp, _guest_view(p, name or b""))
        return n

    return run()


class _Msg:
    """A guest ``msghdr``, read and checked."""

    def __init__(self, p: GuestProcess, addr: int, *, receive: bool) -> None:
        raw = p.mm.read(addr, _MSGHDR.size)
        if receive:
            p.mm.views(addr, _MSGHDR.size, write=True)
        self.addr = addr
        self.name, namelen, iov, iovlen, self.control, controllen, _ = _MSGHDR.unpack(raw)
        namelen = s32(namelen)
        if namelen < 0:
            raise _fail(errno.EINVAL)
        self.namelen = min(namelen, SOCKADDR_MAX) if self.name else 0
        if iovlen > UIO_MAXIOV:
            raise _fail(errno.EMSGSIZE)
        if not receive and controllen > 0x7FFFFFFF:
            raise _fail(errno.ENOBUFS)
        self.controllen = controllen if self.control else 0
        self.views: list[memoryview | Unusable] = []
        total = 0
        for base, length in _IOVEC.iter_unpack(p.mm.read(iov, iovlen * _IOVEC.size) if iovlen else b""):
            if s64(length) < 0:
                raise _fail(errno.EINVAL)
            length = min(length, MAX_RW_COUNT - total)
            total += length
            self.views.extend(_buffer(p, base, length, write=receive))


def _control_out(p: GuestProcess, file: OpenFile, raw: bytes) -> tuple[bytes, list[OpenFile]]:
    """The guest's control data for the host: ``SCM_RIGHTS`` descriptors become host ones."""
    if socket_family(file) != AF_UNIX:
        return raw, []  # the host refuses SCM_RIGHTS there, as Linux does
    out = bytearray(raw)
    files: list[OpenFile] = []
    pos = 0
    while pos + CMSG_HEAD.size <= len(raw):
        clen, level, kind = CMSG_HEAD.unpack_from(raw, pos)
        if clen < CMSG_HEAD.size or clen > len(raw) - pos:
            raise _fail(errno.EINVAL)
        if level == SOL_SOCKET and kind == SCM_RIGHTS:
            count = (clen - CMSG_HEAD.size) // 4
            if count > SCM_MAX_FD:
                raise _fail(errno.EINVAL)
            for i in range(count):
                at = pos + CMSG_HEAD.size + 4 * i
                sent = p.fds.get(_I32.unpack_from(raw, at)[0])
                _I32.pack_into(out, at, sent.host_fd)
                files.append(sent)
        pos += cmsg_align(clen)
    return bytes(out), files


def _control_in(p: GuestProcess, raw: bytes, cloexec: bool) -> tuple[bytes, int]:
    """Host control data for the guest: received descriptors become guest ones.

    Returns the data and ``MSG_CTRUNC`` when the guest's table could not take
    them all (the rest are closed, as Linux does).
    """
    out = bytearray(raw)
    pos = 0
    while pos + CMSG_HEAD.size <= len(raw):
        clen, level, kind = CMSG_HEAD.unpack_from(raw, pos)
        if clen < CMSG_HEAD.size or clen > len(raw) - pos:
            break
        if level == SOL_SOCKET and kind == SCM_RIGHTS:
            count = (clen - CMSG_HEAD.size) // 4
            hosts = [_I32.unpack_from(raw, pos + CMSG_HEAD.size + 4 * i)[0] for i in range(count)]
            for i, host in enumerate(hosts):
                try:
                    file = received_file(host)
                    try:
                        gfd = p.fds.install(file, cloexec=cloexec)
                    except SyscallError:
                        if file.refs == 0:
                            file.close()
                        raise
                except (SyscallError, OSError):
                    for rest in hosts[i + 1 :]:
                        os.close(rest)
                    kept = CMSG_HEAD.size + 4 * i
                    CMSG_HEAD.pack_into(out, pos, kept, level, kind)
                    return bytes(out[: pos + kept]), MSG_CTRUNC
                _I32.pack_into(out, pos + CMSG_HEAD.size + 4 * i, gfd)
        pos += cmsg_align(clen)
    return bytes(out), 0


async def _sendmsg(p: GuestProcess, file: OpenFile, msg_addr: int, flags: int) -> int:
    msg = _Msg(p, msg_addr, receive=False)
    target = _Target(p, file, _read_sockaddr(p, msg.name, msg.namelen)) if msg.name and msg.namelen else None
    try:
        control = b""
        if msg.controllen:
            if msg.controllen > _CONTROL_MAX:
                raise _fail(errno.ENOBUFS)
            control = p.mm.read(msg.control, msg.controllen)
        control, files = _control_out(p, file, control)
        try:
            n = await sock_send(file, msg.views, target.raw if target is not None else None, control, flags)
        except BrokenPipeError:
            _sigpipe(p, file, flags)
            raise
        for f in files:
            sent_in_flight(f)
        return n
    finally:
        if target is not None:
            target.close()


async def _recvmsg(p: GuestProcess, file: OpenFile, msg_addr: int, flags: int) -> int:
    msg = _Msg(p, msg_addr, receive=True)
    room = min(msg.controllen, _CONTROL_MAX)
    n, name, control, got_flags = await sock_recv(
        file, msg.views, SOCKADDR_MAX if msg.name else 0, room, flags & ~MSG_CMSG_CLOEXEC
    )
    control, trunc = _control_in(p, control, bool(flags & MSG_CMSG_CLOEXEC))
    if msg.name:
        guest = _guest_view(p, name or b"")
        if guest and msg.namelen:
            p.mm.write(msg.name, guest[: msg.namelen])
        p.mm.write(msg_addr + _NAMELEN_OFFSET, _I32.pack(len(guest)))
    if control:
        p.mm.write(msg.control, control)
    p.mm.write(msg_addr + _CONTROLLEN_OFFSET, struct.pack("<Q", len(control)))
    p.mm.write(msg_addr + _FLAGS_OFFSET, _I32.pack((got_flags | trunc) & ~MSG_CMSG_CLOEXEC))
    return n


@syscall("sendmsg")
def sys_sendmsg(p: GuestProcess, fd: int, msg: int, flags: int, *_: int) -> Awaitable[int]:
    return _sendmsg(p, _socket(p, fd), msg, flags & 0xFFFFFFFF)


@syscall("recvmsg")
def sys_recvmsg(p: GuestProcess, fd: int, msg: int, flags: int, *_: int) -> Awaitable[int]:
    return _recvmsg(p, _socket(p, fd), msg, flags & 0xFFFFFFFF)


@syscall("sendmmsg")
def sys_sendmmsg(p: GuestProcess, fd: int, vec: int, vlen: int, flags: int, *_: int) -> Awaitable[int]:
    file = _socket(p, fd)
    count = min(vlen & 0xFFFFFFFF, UIO_MAXIOV)
    fl = flags & 0xFFFFFFFF

    async def run() -> int:
        done = 0
        for i in range(count):
            entry = vec + i * _MMSGHDR_SIZE
            try:
                p.mm.views(entry + _MSGHDR.size, 4, write=True)
                n = await _sendmsg(p, file, entry, fl)
            except (SyscallError, OSError):
                if done:
                    return done
                raise
            p.mm.write(entry + _MSGHDR.size, _U32.pack(n))
            done += 1
        return done

    return run()


@syscall("recvmmsg")
def sys_recvmmsg(p: GuestProcess, fd: int, vec: int, vlen: int, flags: int, timeout: int, *_: int) -> Awaitable[int]:
    file = _socket(p, fd)
    count = min(vlen & 0xFFFFFFFF, UIO_MAXIOV)
    fl = flags & 0xFFFFFFFF
    deadline = None
    if timeout:
        sec, nsec = _TIMESPEC.unpack(p.mm.read(timeout, _TIMESPEC.size))
        if sec < 0 or not 0 <= nsec < 1_000_000_000:
            raise _fail(errno.EINVAL)
        deadline = time.monotonic() + sec + nsec / 1e9

    async def run() -> int:
        done = 0
        for i in range(count):
            entry = vec + i * _MMSGHDR_SIZE
            # After the first message, MSG_WAITFORONE takes only what is there already.
            now = fl | MSG_DONTWAIT if done and fl & MSG_WAITFORONE else fl
            try:
                p.mm.views(entry + _MSGHDR.size, 4, write=True)
                n = await _recvmsg(p, file, entry, now & ~MSG_WAITFORONE)
            except (SyscallError, OSError):
                if done:
                    return done
                raise
            p.mm.write(entry + _MSGHDR.size, _U32.pack(n))
            done += 1
            if deadline is not None and time.monotonic() >= deadline:
                break
        return done

    return run()

"""``--strace``: one line per trapped syscall, the way strace prints it.

``openat(AT_FDCWD, "/etc/x", O_RDONLY) = -1 ENOENT (No such file or directory)``

Formatting reads guest memory for strings and buffers; a bad pointer is shown as
a number, never an error.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable, Sequence
from typing import TextIO

from .errors import SyscallError
from .memory import AddressSpace
from .signals import NSIG, signame
from .table import ARGS, HEX_RESULT, NAMES

__all__ = ["PRE_RENDERED", "Strace", "errno_text", "format_args", "format_call", "sockaddr_text", "wait_status_text"]

#: Like strace's default ``-s 32``: buffers are shown up to this many bytes.
STRING_LIMIT = 32
AT_FDCWD = -100

_OPEN_FLAGS = [
    (0o100, "O_CREAT"),
    (0o200, "O_EXCL"),
    (0o400, "O_NOCTTY"),
    (0o1000, "O_TRUNC"),
    (0o2000, "O_APPEND"),
    (0o4000, "O_NONBLOCK"),
    (0o10000, "O_DSYNC"),
    (0o20000, "O_ASYNC"),
    (0o40000, "O_DIRECT"),
    (0o200000, "O_DIRECTORY"),
    (0o400000, "O_NOFOLLOW"),
    (0o1000000, "O_NOATIME"),
    (0o2000000, "O_CLOEXEC"),
    (0o4000000, "O_SYNC"),
    (0o10000000, "O_PATH"),
    (0o20000000, "O_TMPFILE"),
    (0o100000, "O_LARGEFILE"),
]
_PROT = [
    (1, "PROT_READ"),
    (2, "PROT_WRITE"),
    (4, "PROT_EXEC"),
    (8, "PROT_SEM"),
    (0x01000000, "PROT_GROWSDOWN"),
    (0x02000000, "PROT_GROWSUP"),
]
_MAP = [
    (0x10, "MAP_FIXED"),
    (0x20, "MAP_ANONYMOUS"),
    (0x100, "MAP_GROWSDOWN"),
    (0x800, "MAP_DENYWRITE"),
    (0x1000, "MAP_EXECUTABLE"),
    (0x2000, "MAP_LOCKED"),
    (0x4000, "MAP_NORESERVE"),
    (0x8000, "MAP_POPULATE"),
    (0x10000, "MAP_NONBLOCK"),
    (0x20000, "MAP_STACK"),
    (0x40000, "MAP_HUGETLB"),
    (0x80000, "MAP_SYNC"),
    (0x100000, "MAP_FIXED_NOREPLACE"),
]
_AT = [
    (0x100, "AT_SYMLINK_NOFOLLOW"),
    (0x200, "AT_REMOVEDIR"),
    (0x400, "AT_SYMLINK_FOLLOW"),
    (0x800, "AT_NO_AUTOMOUNT"),
    (0x1000, "AT_EMPTY_PATH"),
]
_MAP_TYPES = {1: "MAP_SHARED", 2: "MAP_PRIVATE", 3: "MAP_SHARED_VALIDATE"}
_WHENCE = {0: "SEEK_SET", 1: "SEEK_CUR", 2: "SEEK_END", 3: "SEEK_DATA", 4: "SEEK_HOLE"}
_CLOCKS = {
    0: "CLOCK_REALTIME",
    1: "CLOCK_MONOTONIC",
    2: "CLOCK_PROCESS_CPUTIME_ID",
    3: "CLOCK_THREAD_CPUTIME_ID",
    4: "CLOCK_MONOTONIC_RAW",
    5: "CLOCK_REALTIME_COARSE",
    6: "CLOCK_MONOTONIC_COARSE",
    7: "CLOCK_BOOTTIME",
    8: "CLOCK_REALTIME_ALARM",
    9: "CLOCK_BOOTTIME_ALARM",
    11: "CLOCK_TAI",
}
_ARCH_PRCTL = {
    0x1001: "ARCH_SET_GS",
    0x1002: "ARCH_SET_FS",
    0x1003: "ARCH_GET_FS",
    0x1004: "ARCH_GET_GS",
    0x1011: "ARCH_GET_CPUID",
    0x1012: "ARCH_SET_CPUID",
}
_RLIMITS = [
    "RLIMIT_CPU",
    "RLIMIT_FSIZE",
    "RLIMIT_DATA",
    "RLIMIT_STACK",
    "RLIMIT_CORE",
    "RLIMIT_RSS",
    "RLIMIT_NPROC",
    "RLIMIT_NOFILE",
    "RLIMIT_MEMLOCK",
    "RLIMIT_AS",
    "RLIMIT_LOCKS",
    "RLIMIT_SIGPENDING",
    "RLIMIT_MSGQUEUE",
    "RLIMIT_NICE",
    "RLIMIT_RTPRIO",
    "RLIMIT_RTTIME",
]


def _s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >> 31 else v


def _s64(v: int) -> int:
    v &= 0xFFFFFFFFFFFFFFFF
    return v - (1 << 64) if v >> 63 else v


def _flags(value: int, table: Sequence[tuple[int, str]], zero: str) -> str:
    parts = []
    for bit, name in table:
        if value & bit:
            parts.append(name)
            value &= ~bit
    if value:
        parts.append(hex(value))
    return "|".join(parts) or zero


def quote(data: bytes, limit: int | None = STRING_LIMIT) -> str:
    """``data`` as a C string literal (cut at ``limit`` bytes with ``...``)."""
    cut = limit is not None and len(data) > limit
    out = ['"']
    for b in data[:limit] if limit is not None else data:
        c = chr(b)
        if c in '"\\':
            out.append("\\" + c)
        elif c == "\n":
            out.append("\\n")
        elif c == "\t":
            out.append("\\t")
        elif c == "\r":
            out.append("\\r")
        elif 0x20 <= b < 0x7F:
            out.append(c)
        else:
            out.append(f"\\x{b:02x}")
    out.append('"')
    if cut:
        out.append("...")
    return "".join(out)


def errno_text(err: int) -> str:
    """``ENOENT (No such file or directory)``."""
    return f"{errno.errorcode.get(err, str(err))} ({os.strerror(err)})"


def _signame(v: int) -> str:
    return signame(v) if 0 < v <= NSIG else str(v)


_CLONE_FLAGS = [
    (0x100, "CLONE_VM"),
    (0x200, "CLONE_FS"),
    (0x400, "CLONE_FILES"),
    (0x800, "CLONE_SIGHAND"),
    (0x1000, "CLONE_PIDFD"),
    (0x2000, "CLONE_PTRACE"),
    (0x4000, "CLONE_VFORK"),
    (0x8000, "CLONE_PARENT"),
    (0x10000, "CLONE_THREAD"),
    (0x20000, "CLONE_NEWNS"),
    (0x40000, "CLONE_SYSVSEM"),
    (0x80000, "CLONE_SETTLS"),
    (0x100000, "CLONE_PARENT_SETTID"),
    (0x200000, "CLONE_CHILD_CLEARTID"),
    (0x400000, "CLONE_DETACHED"),
    (0x800000, "CLONE_UNTRACED"),
    (0x1000000, "CLONE_CHILD_SETTID"),
    (0x2000000, "CLONE_NEWCGROUP"),
    (0x4000000, "CLONE_NEWUTS"),
    (0x8000000, "CLONE_NEWIPC"),
    (0x10000000, "CLONE_NEWUSER"),
    (0x20000000, "CLONE_NEWPID"),
    (0x40000000, "CLONE_NEWNET"),
    (0x80000000, "CLONE_IO"),
]
_WAIT_OPTIONS = [
    (1, "WNOHANG"),
    (2, "WSTOPPED"),
    (4, "WEXITED"),
    (8, "WCONTINUED"),
    (0x1000000, "WNOWAIT"),
    (0x20000000, "__WNOTHREAD"),
    (0x40000000, "__WALL"),
    (0x80000000, "__WCLONE"),
]
_FAMILIES = {0: "AF_UNSPEC", 1: "AF_UNIX", 2: "AF_INET", 10: "AF_INET6", 16: "AF_NETLINK", 17: "AF_PACKET"}
_SOCK_TYPES = {1: "SOCK_STREAM", 2: "SOCK_DGRAM", 3: "SOCK_RAW", 4: "SOCK_RDM", 5: "SOCK_SEQPACKET", 10: "SOCK_PACKET"}
_SOCK_FLAGS = [(0o4000, "SOCK_NONBLOCK"), (0o2000000, "SOCK_CLOEXEC")]
_MSG_FLAGS = [
    (0x1, "MSG_OOB"),
    (0x2, "MSG_PEEK"),
    (0x4, "MSG_DONTROUTE"),
    (0x8, "MSG_CTRUNC"),
    (0x20, "MSG_TRUNC"),
    (0x40, "MSG_DONTWAIT"),
    (0x80, "MSG_EOR"),
    (0x100, "MSG_WAITALL"),
    (0x800, "MSG_CONFIRM"),
    (0x2000, "MSG_ERRQUEUE"),
    (0x4000, "MSG_NOSIGNAL"),
    (0x8000, "MSG_MORE"),
    (0x10000, "MSG_WAITFORONE"),
    (0x20000000, "MSG_FASTOPEN"),
    (0x40000000, "MSG_CMSG_CLOEXEC"),
]
_SHUTDOWN = {0: "SHUT_RD", 1: "SHUT_WR", 2: "SHUT_RDWR"}
_SOL = {1: "SOL_SOCKET", 0: "SOL_IP", 6: "SOL_TCP", 17: "SOL_UDP", 41: "SOL_IPV6"}
_IDTYPES = {0: "P_ALL", 1: "P_PID", 2: "P_PGID", 3: "P_PIDFD"}
#: Calls whose arguments are shown before the call runs (it replaces the memory they name).
PRE_RENDERED = frozenset({"execve", "execveat"})
#: strace shows at most this many elements of an argv.
ARRAY_LIMIT = 32


def wait_status_text(st: int) -> str:
    """A ``wait`` status the way strace shows it: ``[{WIFEXITED(s) && WEXITSTATUS(s) == 0}]``."""
    if st & 0x7F == 0:
        return f"[{{WIFEXITED(s) && WEXITSTATUS(s) == {(st >> 8) & 0xFF}}}]"
    if st & 0xFF == 0x7F:
        return f"[{{WIFSTOPPED(s) && WSTOPSIG(s) == {_signame((st >> 8) & 0xFF)}}}]"
    if st == 0xFFFF:
        return "[{WIFCONTINUED(s)}]"
    core = " && WCOREDUMP(s)" if st & 0x80 else ""
    return f"[{{WIFSIGNALED(s) && WTERMSIG(s) == {_signame(st & 0x7F)}{core}}}]"


def sockaddr_text(raw: bytes) -> str:
    """A socket address the way strace shows it: ``{sa_family=AF_INET, sin_port=htons(80), ...}``."""
    if len(raw) < 2:
        return "{sa_family=???}" if raw else "NULL"
    family = int.from_bytes(raw[:2], "little")
    name = _FAMILIES.get(family, str(family))
    body = raw[2:]
    if family == 1:
        if not body:
            return "{sa_family=AF_UNIX}"
        if body[0] == 0:
            return f"{{sa_family=AF_UNIX, sun_path=@{quote(body[1:], None)}}}"
        path = body.split(b"\0", 1)[0]
        return f"{{sa_family=AF_UNIX, sun_path={quote(path, None)}}}"
    if family == 2 and len(raw) >= 8:
        port = int.from_bytes(raw[2:4], "big")
        addr = ".".join(str(b) for b in raw[4:8])
        return f'{{sa_family=AF_INET, sin_port=htons({port}), sin_addr=inet_addr("{addr}")}}'
    if family == 10 and len(raw) >= 24:
        port = int.from_bytes(raw[2:4], "big")
        flow = int.from_bytes(raw[4:8], "big")
        addr = socket.inet_ntop(socket.AF_INET6, raw[8:24])
        scope = int.from_bytes(raw[24:28], "little") if len(raw) >= 28 else 0
        return (
            f"{{sa_family=AF_INET6, sin6_port=htons({port}), sin6_flowinfo=htonl({flow}), "
            f'inet_pton(AF_INET6, "{addr}", &sin6_addr), sin6_scope_id={scope}}}'
        )
    if family == 16 and len(raw) >= 12:
        pid, groups = int.from_bytes(raw[4:8], "little"), int.from_bytes(raw[8:12], "little")
        return f"{{sa_family=AF_NETLINK, nl_pid={pid}, nl_groups={groups:08x}}}"
    return f"{{sa_family={name}, sa_data={quote(body, None)}}}"


def _str_array(mm: AddressSpace, addr: int) -> list[bytes | None]:
    out: list[bytes | None] = []
    while len(out) <= ARRAY_LIMIT:
        ptr = mm.read_u64(addr + 8 * len(out))
        if ptr == 0:
            return out
        out.append(mm.read_cstr(ptr, 4096) if len(out) < ARRAY_LIMIT else None)
    return out


def _format_clone(args: Sequence[int]) -> str:
    flags, stack, ptid, ctid, tls = args[:5]
    parts = [f"child_stack={'NULL' if stack == 0 else hex(stack)}"]
    low = flags & 0xFF
    names = _flags(flags & ~0xFF, _CLONE_FLAGS, "")
    if low:
        names = (names + "|" if names else "") + _signame(low)
    parts.append(f"flags={names or '0'}")
    if flags & 0x100000:
        parts.append(f"parent_tid={hex(ptid)}")
    if flags & 0x1200000:
        parts.append(f"child_tidptr={hex(ctid)}")
    if flags & 0x80000:
        parts.append(f"tls={hex(tls)}")
    return ", ".join(parts)


def format_arg(kind: str, value: int, mm: AddressSpace | None, nxt: int, result: int) -> str:
    """One argument, by its kind letter (see :mod:`aioumm.guest.table`)."""
    try:
        return _format_arg(kind, value, mm, nxt, result)
    except SyscallError:
        return hex(value)


def _format_arg(kind: str, value: int, mm: AddressSpace | None, nxt: int, result: int) -> str:
    if kind == "d":
        return str(_s64(value))
    if kind == "i":
        return str(_s32(value))
    if kind == "u":
        return str(value)
    if kind == "p":
        return "NULL" if value == 0 else hex(value)
    if kind == "F":
        return "AT_FDCWD" if _s32(value) == AT_FDCWD else str(_s32(value))
    if kind in "sbB":
        if value == 0:
            return "NULL"
        if mm is None:
            return hex(value)
        if kind == "s":
            return quote(mm.read_cstr(value, 4096), None)
        n = nxt if kind == "b" else result
        if n < 0 or (kind == "B" and result < 0):
            return hex(value)
        return quote(mm.read(value, min(n, STRING_LIMIT + 1)))
    if kind == "o":
        acc = {0: "O_RDONLY", 1: "O_WRONLY", 2: "O_RDWR"}.get(value & 3, "O_ACCMODE")
        rest = _flags(value & ~3, _OPEN_FLAGS, "")
        return acc + ("|" + rest if rest else "")
    if kind == "m":
        return f"0{value & 0o7777:o}" if value else "000"
    if kind == "P":
        return _flags(value, _PROT, "PROT_NONE")
    if kind == "M":
        kind_name = _MAP_TYPES.get(value & 0xF, hex(value & 0xF))
        rest = _flags(value & ~0xF, _MAP, "")
        return kind_name + ("|" + rest if rest else "")
    if kind == "S":
        return _signame(_s32(value))
    if kind == "w":
        return _WHENCE.get(value, str(value))
    if kind == "c":
        return _CLOCKS.get(_s32(value), str(_s32(value)))
    if kind == "a":
        return _ARCH_PRCTL.get(value, hex(value))
    if kind == "r":
        return _RLIMITS[value] if value < len(_RLIMITS) else str(value)
    if kind == "t":
        return _flags(value, _AT, "0")
    if kind == "f":
        return _flags(value, _OPEN_FLAGS, "0")
    if kind == "H":
        return _flags(value & 0xFFFFFFFF, _WAIT_OPTIONS, "0")
    if kind == "I":
        return _IDTYPES.get(value, str(value))
    if kind in "kKl":
        if value == 0:
            return "NULL"
        if mm is None or (kind != "k" and result < 0):
            return hex(value)
        if kind == "k":
            return sockaddr_text(mm.read(value, min(max(_s32(nxt), 0), 128)))
        if kind == "l":
            return f"[{int.from_bytes(mm.read(value, 4), 'little')}]"
        length = int.from_bytes(mm.read(nxt, 4), "little") if nxt else 0
        return sockaddr_text(mm.read(value, min(length, 128)))
    if kind == "D":
        return _FAMILIES.get(_s32(value), str(_s32(value)))
    if kind == "T":
        base = _SOCK_TYPES.get(value & 0xF, str(value & 0xF))
        rest = _flags(value & 0xFFFFFFF0, _SOCK_FLAGS, "")
        return base + ("|" + rest if rest else "")
    if kind == "n":
        return _flags(value & 0xFFFFFFFF, _SOCK_FLAGS, "0")
    if kind == "g":
        return _flags(value & 0xFFFFFFFF, _MSG_FLAGS, "0")
    if kind == "h":
        return _SHUTDOWN.get(value, str(_s32(value)))
    if kind == "L":
        return _SOL.get(_s32(value), str(_s32(value)))
    if kind in "AEWY":
        if value == 0:
            return "NULL"
        if mm is None:
            return hex(value)
        if kind == "A":
            items = _str_array(mm, value)
            shown = ["..." if x is None else quote(x) for x in items]
            return "[" + ", ".join(shown) + "]"
        if kind == "E":
            n = 0
            while mm.read_u64(value + 8 * n):
                n += 1
                if n >= 1 << 20:
                    break
            return f"{value:#x} /* {n} var{'s' if n != 1 else ''} */"
        if kind == "W":
            if result <= 0:
                return hex(value)
            return wait_status_text(int.from_bytes(mm.read(value, 4), "little"))
        if result != 0:  # "Y": the two descriptors of pipe2
            return hex(value)
        a, b = (int.from_bytes(mm.read(value + i, 4), "little", signed=True) for i in (0, 4))
        return f"[{a}, {b}]"
    return hex(value)


def format_args(nr: int, args: Sequence[int], result: int | None, mm: AddressSpace | None) -> str:
    """The arguments of one call, as strace shows them between the parentheses."""
    name = NAMES.get(nr, f"syscall_{nr:#x}")
    if name == "clone":
        return _format_clone(args)
    kinds = ARGS.get(name)
    if kinds is not None and name in ("open", "openat"):
        flags = args[kinds.index("o")]
        if not flags & (0o100 | 0o20000000):  # O_CREAT, O_TMPFILE: only then is there a mode
            kinds = kinds[:-1]
    res = 0 if result is None else result
    if kinds is None:
        return ", ".join(hex(a) for a in args)
    return ", ".join(
        format_arg(k, args[i], mm, args[i + 1] if i + 1 < len(args) else 0, res) for i, k in enumerate(kinds)
    )


def format_call(
    nr: int,
    args: Sequence[int],
    result: int | None,
    mm: AddressSpace | None,
    *,
    unknown: bool = False,
    shown: str | None = None,
    note: str | None = None,
) -> str:
    """The whole strace line (without the newline); ``result`` None shows ``?``.

    ``shown`` is the arguments already formatted (see :data:`PRE_RENDERED`);
    ``note`` is said after the result, in parentheses.
    """
    name = NAMES.get(nr, f"syscall_{nr:#x}")
    if shown is None:
        shown = format_args(nr, args, result, mm)
    line = f"{name}({shown}) = "
    if result is None:
        line += "?"
    elif -4096 < result < 0:
        line += f"-1 {errno_text(-result)}"
    elif name in HEX_RESULT:
        line += hex(result)
    else:
        line += str(result)
    if unknown:
        line += " (syscall not implemented by aioumm)"
    elif note:
        line += f" ({note})"
    return line


class Strace:
    """Writes strace lines for one guest to a text stream."""

    def __init__(self, out: TextIO, prefix: Callable[[], str] | None = None) -> None:
        self.out = out
        self.prefix = prefix

    def call(
        self,
        nr: int,
        args: Sequence[int],
        result: int | None,
        mm: AddressSpace | None,
        *,
        unknown: bool = False,
        shown: str | None = None,
        note: str | None = None,
    ) -> None:
        """Print one finished call (``shown``: its arguments, formatted before it ran)."""
        self.emit(format_call(nr, args, result, mm, unknown=unknown, shown=shown, note=note))

    def line(
        self,
        nr: int,
        args: Sequence[int],
        result: int | None,
        mm: AddressSpace | None,
        *,
        shown: str | None = None,
    ) -> str:
        """The line :meth:`call` would print (without printing it)."""
        return format_call(nr, args, result, mm, shown=shown)

    def render_args(self, nr: int, args: Sequence[int], mm: AddressSpace | None) -> str | None:
        """The arguments of a call that must be shown as they were before it ran, else None."""
        if NAMES.get(nr) not in PRE_RENDERED:
            return None
        try:
            return format_args(nr, args, None, mm)
        except SyscallError:
            return ", ".join(hex(a) for a in args[:5])

    def emit(self, text: str) -> None:
        """Print one line (with the optional per-process prefix), flushed at once."""
        head = self.prefix() if self.prefix is not None else ""
        self.out.write(f"{head}{text}\n")
        self.out.flush()

"""The initial process stack: argc, argv, envp and the auxiliary vector.

The image is laid out the way Linux's ELF loader lays it out, from the top of the
stack down:

* an 8-byte zero word at the very top;
* the exec file name (what ``AT_EXECFN`` points at);
* the environment strings, then the argument strings below them, each set in
  order and contiguous (``argv[i + 1] == argv[i] + strlen(argv[i]) + 1``);
* 16-byte alignment, the platform string ``"x86_64"`` (``AT_PLATFORM``) and the 16
  random bytes of ``AT_RANDOM``;
* the table the program reads at entry: ``argc``, the ``argv`` pointers and a NULL,
  the ``envp`` pointers and a NULL, then ``(type, value)`` auxv pairs ending with
  ``AT_NULL``.  ``rsp`` points at ``argc`` and is 16-byte aligned.

There is no ``AT_SYSINFO_EHDR``: the host vDSO is not mapped in a guest, so every
time call really is a syscall the runner serves.
"""

from __future__ import annotations

import errno
import functools
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import SyscallError

__all__ = [
    "StackImage",
    "build_stack",
    "host_auxv",
    "initial_auxv",
]

# Auxiliary vector types (linux/auxvec.h, asm/auxvec.h).
AT_NULL = 0
AT_IGNORE = 1
AT_EXECFD = 2
AT_PHDR = 3
AT_PHENT = 4
AT_PHNUM = 5
AT_PAGESZ = 6
AT_BASE = 7
AT_FLAGS = 8
AT_ENTRY = 9
AT_NOTELF = 10
AT_UID = 11
AT_EUID = 12
AT_GID = 13
AT_EGID = 14
AT_PLATFORM = 15
AT_HWCAP = 16
AT_CLKTCK = 17
AT_SECURE = 23
AT_BASE_PLATFORM = 24
AT_RANDOM = 25
AT_HWCAP2 = 26
AT_EXECFN = 31
AT_SYSINFO_EHDR = 33
AT_MINSIGSTKSZ = 51

PLATFORM = b"x86_64"
#: Linux's limit on the argument and environment strings: a quarter of the stack.
ARG_FRACTION = 4
#: Linux's limit on one argument or environment string (32 pages).
MAX_ARG_STRLEN = 32 * 4096
#: What the kernel reports when it cannot tell (x86-64's MINSIGSTKSZ).
FALLBACK_MINSIGSTKSZ = 2048

_U64 = struct.Struct("<Q")


@functools.cache
def host_auxv() -> dict[int, int]:
    """The controller's own auxiliary vector (for values that describe the CPU)."""
    try:
        with open("/proc/self/auxv", "rb") as f:
            raw = f.read()
    except OSError:
        return {}
    out: dict[int, int] = {}
    for i in range(0, len(raw) - 15, 16):
        key, val = struct.unpack_from("<QQ", raw, i)
        if key == AT_NULL:
            break
        out[key] = val
    return out


def initial_auxv(
    *,
    phdr: int,
    phent: int,
    phnum: int,
    entry: int,
    base: int = 0,
    page_size: int = 4096,
    uid: int | None = None,
    euid: int | None = None,
    gid: int | None = None,
    egid: int | None = None,
) -> list[tuple[int, int]]:
    """The auxv a program gets, in the order Linux writes it.

    ``base`` is the load address of a dynamically linked program's loader
    (``AT_BASE``; 0 for a static program).
    ``AT_RANDOM``, ``AT_EXECFN`` and ``AT_PLATFORM`` carry 0 here; :func:`build_stack`
    points them at the bytes it places on the stack.  Credentials default to the
    controller's own.  ``AT_HWCAP``, ``AT_HWCAP2`` and ``AT_MINSIGSTKSZ`` come from
    the host's auxv: the guest runs on the same CPU, and its signal frames are the
    host kernel's.
    """
    host = host_auxv()
    return [
        (AT_MINSIGSTKSZ, host.get(AT_MINSIGSTKSZ, FALLBACK_MINSIGSTKSZ)),
        (AT_HWCAP, host.get(AT_HWCAP, 0)),
        (AT_PAGESZ, page_size),
        (AT_CLKTCK, 100),
        (AT_PHDR, phdr),
        (AT_PHENT, phent),
        (AT_PHNUM, phnum),
        (AT_BASE, base),
        (AT_FLAGS, 0),
        (AT_ENTRY, entry),
        (AT_UID, os.getuid() if uid is None else uid),
        (AT_EUID, os.geteuid() if euid is None else euid),
        (AT_GID, os.getgid() if gid is None else gid),
        (AT_EGID, os.getegid() if egid is None else egid),
        (AT_SECURE, 0),
        (AT_RANDOM, 0),
        (AT_HWCAP2, host.get(AT_HWCAP2, 0)),
        (AT_EXECFN, 0),
        (AT_PLATFORM, 0),
    ]


@dataclass(frozen=True)
class StackImage:
    """The bytes to store at ``[sp, top)`` and where the interesting parts are."""

    sp: int
    top: int
    data: bytes
    argv: tuple[int, ...]
    envp: tuple[int, ...]
    execfn: int
    platform: int
    random: int
    auxv: tuple[tuple[int, int], ...]


def _check_strings(strings: Sequence[bytes], what: str) -> None:
    for s in strings:
        if b"\0" in s:
            raise ValueError(f"{what} string contains a NUL byte: {s!r}")
        if len(s) + 1 > MAX_ARG_STRLEN:
            raise SyscallError(errno.E2BIG)


def build_stack(
    top: int,
    argv: Sequence[bytes],
    envp: Sequence[bytes],
    execfn: bytes,
    auxv: Sequence[tuple[int, int]],
    random16: bytes | None = None,
    stack_size: int = 8 << 20,
) -> StackImage:
    """Lay out the initial stack below ``top`` (see the module docstring).

    Raises :class:`SyscallError` (``E2BIG``) when the strings exceed Linux's limits.
    """
    if top & 15:
        raise ValueError("stack top must be 16-byte aligned")
    _check_strings(argv, "argument")
    _check_strings(envp, "environment")
    _check_strings([execfn], "file name")
    rnd = os.urandom(16) if random16 is None else random16
    if len(rnd) != 16:
        raise ValueError("AT_RANDOM needs exactly 16 bytes")

    strings_size = sum(len(s) + 1 for s in (*argv, *envp, execfn))
    if strings_size > stack_size // ARG_FRACTION:
        raise SyscallError(errno.E2BIG)

    # Strings, top down: execfn, then envp, then argv (so each set is ascending).
    pos = top - 8
    pos -= len(execfn) + 1
    execfn_at = pos
    env_total = sum(len(s) + 1 for s in envp)
    arg_total = sum(len(s) + 1 for s in argv)
    env_base = pos - env_total
    arg_base = env_base - arg_total
    env_at: list[int] = []
    p = env_base
    for s in envp:
        env_at.append(p)
        p += len(s) + 1
    arg_at: list[int] = []
    p = arg_base
    for s in argv:
        arg_at.append(p)
        p += len(s) + 1

    p = arg_base & ~15
    platform_at = p - (len(PLATFORM) + 1)
    random_at = (platform_at - 16) & ~15
    pointers = {AT_RANDOM: random_at, AT_EXECFN: execfn_at, AT_PLATFORM: platform_at}
    aux = [(k, pointers.get(k, v)) for k, v in auxv if k != AT_NULL]
    aux.append((AT_NULL, 0))
    words = [len(argv), *arg_at, 0, *env_at, 0]
    for k, v in aux:
        words += [k, v]
    sp = (random_at - 8 * len(words)) & ~15

    image = bytearray(top - sp)

    def put(addr: int, blob: bytes) -> None:
        image[addr - sp : addr - sp + len(blob)] = blob

    put(sp, b"".join(_U64.pack(w & 0xFFFFFFFFFFFFFFFF) for w in words))
    put(random_at, rnd)
    put(platform_at, PLATFORM + b"\0")
    put(arg_base, b"".join(s + b"\0" for s in argv))
    put(env_base, b"".join(s + b"\0" for s in envp))
    put(execfn_at, execfn + b"\0")
    return StackImage(
        sp=sp,
        top=top,
        data=bytes(image),
        argv=tuple(arg_at),
        envp=tuple(env_at),
        execfn=execfn_at,
        platform=platform_at,
        random=random_at,
        auxv=tuple(aux),
    )

"""The initial stack image, checked byte by byte."""

from __future__ import annotations

import errno
import struct

import pytest

from aioumm.guest import stack as st
from aioumm.guest.errors import SyscallError

TOP = 0x7DFFFFFFF000


def _image(argv: list[bytes], envp: list[bytes], execfn: bytes = b"/bin/prog") -> st.StackImage:
    aux = st.initial_auxv(phdr=0x400040, phent=56, phnum=10, entry=0x401530, uid=1, euid=2, gid=3, egid=4)
    return st.build_stack(TOP, argv, envp, execfn, aux, random16=bytes(range(1, 17)))


def _word(img: st.StackImage, addr: int) -> int:
    return int(struct.unpack_from("<Q", img.data, addr - img.sp)[0])


def _cstr(img: st.StackImage, addr: int) -> bytes:
    off = addr - img.sp
    return img.data[off : img.data.index(b"\0", off)]


@pytest.mark.parametrize("argv", [[b"prog"], [b"prog", b"one", b"two words", b""], [b"x"] * 7])
def test_layout_matches_linux(argv: list[bytes]) -> None:
    envp = [b"FOO=bar", b"PATH=/bin"]
    img = _image(argv, envp)
    assert img.sp % 16 == 0 and img.sp + len(img.data) == TOP
    assert _word(img, img.sp) == len(argv)  # argc at [rsp]
    pos = img.sp + 8
    for i, s in enumerate(argv):
        assert _word(img, pos) == img.argv[i]
        assert _cstr(img, img.argv[i]) == s
        pos += 8
    assert _word(img, pos) == 0
    pos += 8
    for i, s in enumerate(envp):
        assert _word(img, pos) == img.envp[i]
        assert _cstr(img, img.envp[i]) == s
        pos += 8
    assert _word(img, pos) == 0
    pos += 8
    aux = []
    while True:
        k, v = _word(img, pos), _word(img, pos + 8)
        pos += 16
        aux.append((k, v))
        if k == st.AT_NULL:
            break
    assert aux == list(img.auxv)
    # Strings: argv contiguous, then envp, then the exec name, then a zero word at the top.
    for a, b, s in zip(img.argv, img.argv[1:], argv, strict=False):
        assert b == a + len(s) + 1
    assert img.envp[0] == img.argv[-1] + len(argv[-1]) + 1
    assert img.execfn == img.envp[-1] + len(envp[-1]) + 1
    assert _cstr(img, img.execfn) == b"/bin/prog"
    assert img.execfn + len(b"/bin/prog") + 1 == TOP - 8
    assert _word(img, TOP - 8) == 0
    assert _cstr(img, img.platform) == b"x86_64"
    off = img.random - img.sp
    assert img.data[off : off + 16] == bytes(range(1, 17))
    assert pos <= img.random  # the table lies below the random bytes


def test_auxv_contents() -> None:
    img = _image([b"p"], [])
    aux = dict(img.auxv)
    assert aux[st.AT_PAGESZ] == 4096
    assert aux[st.AT_PHDR] == 0x400040 and aux[st.AT_PHENT] == 56 and aux[st.AT_PHNUM] == 10
    assert aux[st.AT_ENTRY] == 0x401530 and aux[st.AT_BASE] == 0 and aux[st.AT_FLAGS] == 0
    assert (aux[st.AT_UID], aux[st.AT_EUID], aux[st.AT_GID], aux[st.AT_EGID]) == (1, 2, 3, 4)
    assert aux[st.AT_SECURE] == 0 and aux[st.AT_CLKTCK] == 100
    assert aux[st.AT_RANDOM] == img.random and aux[st.AT_EXECFN] == img.execfn
    assert aux[st.AT_PLATFORM] == img.platform
    assert st.AT_SYSINFO_EHDR not in aux  # no host vDSO in a guest
    host = st.host_auxv()
    assert aux[st.AT_MINSIGSTKSZ] == host.get(st.AT_MINSIGSTKSZ, st.FALLBACK_MINSIGSTKSZ)
    assert aux[st.AT_HWCAP] == host.get(st.AT_HWCAP, 0)
    assert aux[st.AT_HWCAP2] == host.get(st.AT_HWCAP2, 0)


def test_limits() -> None:
    with pytest.raises(SyscallError) as exc:
        _image([b"p", b"x" * (st.MAX_ARG_STRLEN)], [])
    assert exc.value.errno == errno.E2BIG
    with pytest.raises(SyscallError) as exc:
        _image([b"p"] + [b"y" * 100_000] * 30, [])
    assert exc.value.errno == errno.E2BIG
    with pytest.raises(ValueError, match="NUL"):
        _image([b"a\0b"], [])

"""Tiny guests for core tests: x86-64 assembly assembled with binutils, loaded into a stub."""

from __future__ import annotations

import functools
import hashlib
import os
import subprocess
import tempfile
from pathlib import Path

from aioumm.stub import Stub

CODE_ADDR = 0x10000
STACK_TOP = 0x200000
STACK_SIZE = 0x10000
PROT_R, PROT_W, PROT_X = 1, 2, 4
_CACHE = Path(tempfile.gettempdir()) / f"aioumm-test-asm-{os.getuid()}"


@functools.cache
def assemble(source: str) -> bytes:
    """Assemble AT&T-syntax ``source`` into flat machine code (position-independent code only)."""
    _CACHE.mkdir(exist_ok=True)
    key = hashlib.sha256(source.encode()).hexdigest()[:16]
    out = _CACHE / f"{key}.bin"
    if not out.exists():
        src = _CACHE / f"{key}.s"
        obj = _CACHE / f"{key}.o"
        src.write_text(".text\n.globl _start\n_start:\n" + source + "\n")
        subprocess.run(["as", "--64", "-o", str(obj), str(src)], check=True)
        subprocess.run(["objcopy", "-O", "binary", "-j", ".text", str(obj), str(out)], check=True)
    return out.read_bytes()


class Guest:
    """A code page and a stack in one memfd, mapped into a stub and ready to run."""

    def __init__(self, stub: Stub, source: str) -> None:
        code = assemble(source)
        assert len(code) <= 4096
        self.stub = stub
        self.fd = os.memfd_create("test-guest", os.MFD_CLOEXEC)
        os.ftruncate(self.fd, 4096 + STACK_SIZE)
        os.pwrite(self.fd, code, 0)
        stub.mmap(CODE_ADDR, 4096, PROT_R | PROT_X, self.fd, 0)
        stub.mmap(STACK_TOP - STACK_SIZE, STACK_SIZE, PROT_R | PROT_W, self.fd, 4096)
        stub.regs.rip = CODE_ADDR
        stub.regs.rsp = STACK_TOP - 64

    def close(self) -> None:
        os.close(self.fd)

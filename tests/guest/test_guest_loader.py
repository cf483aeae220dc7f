"""Loading a real program and its stack into an address space (fake stub, real memory)."""

from __future__ import annotations

import os
from pathlib import Path

from guest_fakes import FakeStub

from aioumm.guest.elf import PF_W, open_program
from aioumm.guest.layout import page_down, page_up
from aioumm.guest.loader import load_image, setup_stack
from aioumm.guest.memory import AddressSpace
from aioumm.guest.stack import AT_ENTRY, AT_PHDR


def test_segments_and_stack(hello: Path, mm: AddressSpace, fake_stub: FakeStub) -> None:
    image, fd = open_program(str(hello))
    try:
        prog = load_image(mm, image, fd)
    finally:
        os.close(fd)
    data = hello.read_bytes()
    ops = fake_stub.take()
    file_fds = {op[4] for op in ops if op[4] != mm.physmem.fd}
    assert len(file_fds) == 1  # one descriptor of the program file, passed for every read-only segment
    for seg in image.segments:
        start = page_down(seg.vaddr)
        op = next(o for o in ops if o[1] == start)
        if seg.flags & PF_W:
            assert op[4] == mm.physmem.fd and op[6] is True
            # The file's bytes, then zeros for .bss.
            assert mm.read(seg.vaddr, seg.filesz) == data[seg.offset : seg.offset + seg.filesz]
            assert mm.read(seg.vaddr + seg.filesz, seg.memsz - seg.filesz) == bytes(seg.memsz - seg.filesz)
        else:
            assert op[4] in file_fds and op[5] == page_down(seg.offset) and op[6] is False
            assert op[3] == seg.prot
            assert mm.read(seg.vaddr, 64) == data[seg.offset : seg.offset + 64]  # read through the file map
    assert prog.brk_start == page_up(max(s.end for s in image.segments)) == mm.brk
    assert prog.entry == image.entry and prog.phdr == image.phdr_vaddr

    stack = setup_stack(mm, prog, [b"hello", b"arg"], [b"K=V"], b"/x/hello")
    assert mm.read_u64(stack.sp) == 2
    assert mm.read_cstr(mm.read_u64(stack.sp + 8)) == b"hello"
    aux = dict(stack.auxv)
    assert aux[AT_ENTRY] == prog.entry and aux[AT_PHDR] == prog.phdr
    assert mm.find(stack.sp) is not None and mm.find(stack.sp).name == "[stack]"  # type: ignore[union-attr]


def test_static_pie_is_relocated(hello_pie: Path, mm: AddressSpace, fake_stub: FakeStub) -> None:
    image, fd = open_program(str(hello_pie))
    try:
        prog = load_image(mm, image, fd)
    finally:
        os.close(fd)
    assert prog.bias == mm.layout.pie_base - image.lowest
    assert prog.entry == image.entry + prog.bias
    assert min(op[1] for op in fake_stub.take() if op[0] == "mmap") == mm.layout.pie_base

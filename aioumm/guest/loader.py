"""Putting a checked program image and its initial stack into an address space."""

from __future__ import annotations

from dataclasses import dataclass

from .elf import PF_W, ElfImage
from .layout import PAGE_SIZE, page_down, page_up
from .memory import PROT_EXEC, PROT_READ, PROT_WRITE, AddressSpace, FileBacking
from .stack import StackImage, build_stack, initial_auxv

__all__ = ["LoadedProgram", "load_image", "setup_stack"]


@dataclass(frozen=True)
class LoadedProgram:
    """Where a program landed (all addresses relocated)."""

    bias: int
    entry: int
    phdr: int
    phnum: int
    phent: int
    brk_start: int


def load_image(mm: AddressSpace, image: ElfImage, fd: int, name: str | None = None) -> LoadedProgram:
    """Map every ``PT_LOAD`` segment of ``image`` (open on ``fd``) into ``mm``.

    The mappings are named ``name`` in ``/proc/PID/maps`` (by default the path the
    image was read by; Linux shows the file's own path).

    Read-only segments that have a page range of their own are mapped straight from
    the program file (the stub receives ``fd`` itself); writable segments, and any
    segment sharing a page with a neighbour, become physmem pages holding a copy of
    the file bytes (their ``.bss`` reads as zeros).  The break starts on the page
    after the image.
    """
    layout = mm.layout
    bias = image.load_bias(layout)
    image.check_placement(layout, bias)
    prog = FileBacking(fd)
    prog.acquire()  # held while loading, so it stays open until every segment is in
    try:
        segs = image.segments
        ranges = [(page_down(s.vaddr + bias), page_up(s.end + bias)) for s in segs]
        for i, seg in enumerate(segs):
            start, end = ranges[i]
            shares_page = (i > 0 and ranges[i - 1][1] > start) or (i + 1 < len(segs) and ranges[i + 1][0] < end)
            file_lo = page_down(seg.offset)
            if not seg.flags & PF_W and seg.filesz == seg.memsz and not shares_page:
                mm.map_backing(start, end - start, seg.prot, prog, file_lo, name=name or image.path)
                continue
            vma = mm.map_anon(start, end - start, seg.prot, name=name or image.path)
            # The first page starts at the page-aligned file offset, as a file mapping
            # would; everything past p_filesz stays zero (.bss).
            data = prog.view[file_lo : seg.offset + seg.filesz]
            mm.physmem.view[vma.offset : vma.offset + len(data)] = data
    finally:
        prog.drop()
    brk = page_up(max(s.end for s in image.segments) + bias)
    mm.brk_start = mm.brk = brk
    phdr = image.phdr_vaddr + bias if image.phdr_vaddr is not None else 0
    return LoadedProgram(
        bias=bias,
        entry=image.entry + bias,
        phdr=phdr,
        phnum=image.phnum,
        phent=image.phentsize,
        brk_start=brk,
    )


def setup_stack(
    mm: AddressSpace,
    prog: LoadedProgram,
    argv: list[bytes],
    envp: list[bytes],
    execfn: bytes,
    *,
    exec_stack: bool = False,
    creds: tuple[int, int, int, int] | None = None,
) -> StackImage:
    """Map the stack reserve and store the initial stack; return its image.

    ``creds`` is ``(uid, euid, gid, egid)`` for the auxv (default: the controller's).
    """
    layout = mm.layout
    prot = PROT_READ | PROT_WRITE | (PROT_EXEC if exec_stack else 0)
    mm.map_anon(layout.stack_bottom, layout.stack_size, prot, name="[stack]")
    uid, euid, gid, egid = creds if creds is not None else (None, None, None, None)
    auxv = initial_auxv(
        phdr=prog.phdr,
        phent=prog.phent,
        phnum=prog.phnum,
        entry=prog.entry,
        page_size=PAGE_SIZE,
        uid=uid,
        euid=euid,
        gid=gid,
        egid=egid,
    )
    img = build_stack(layout.stack_top, argv, envp, execfn, auxv, stack_size=layout.stack_size)
    mm.poke(img.sp, img.data)
    return img

"""Putting a checked program image and its initial stack into an address space.

A dynamically linked program is loaded as Linux's ELF loader loads it: the
program where :meth:`.ElfImage.load_bias` puts it (an ``ET_EXEC`` at its own
addresses, a PIE at ``ELF_ET_DYN_BASE``), its loader (``PT_INTERP``) in the mmap
region below it, top-down like any ``mmap`` without a hint (an ``ET_EXEC`` loader
at its own addresses, over the program where they meet, as Linux maps it
``MAP_FIXED``).  The break follows the program, the auxv describes the program
(``AT_PHDR``, ``AT_ENTRY``) and the loader's base (``AT_BASE``), and the guest
starts at the loader's entry point.
"""

from __future__ import annotations

from dataclasses import dataclass

from .elf import PF_W, ElfImage
from .errors import GuestError, SyscallError
from .layout import PAGE_SIZE, page_down, page_up
from .memory import PROT_EXEC, PROT_READ, PROT_WRITE, AddressSpace, FileBacking
from .stack import StackImage, build_stack, initial_auxv

__all__ = ["Interpreter", "LoadedProgram", "UnloadableInterpreter", "load_image", "load_program", "setup_stack"]


@dataclass
class Interpreter:
    """The loader a program names in ``PT_INTERP``, opened and read.

    ``image`` is None when the file passed the checks Linux makes before the point
    of no return (an ELF file for x86-64 with sane program headers) but not the
    rest: the exec goes ahead and the new program dies of ``SIGSEGV``, as on Linux.
    """

    image: ElfImage | None
    #: A controller descriptor of the loader's file; its owner closes it.
    fd: int
    #: The guest's path of the file (how ``/proc/PID/maps`` names its mappings).
    path: str


class UnloadableInterpreter(GuestError):
    """The loader cannot be mapped: Linux finds that past the point of no return."""


@dataclass(frozen=True)
class LoadedProgram:
    """Where a program landed (all addresses relocated)."""

    bias: int
    entry: int
    phdr: int
    phnum: int
    phent: int
    brk_start: int
    #: Where the guest starts: the loader's entry point, or ``entry`` without one.
    start: int = 0
    #: The loader's load bias (``AT_BASE``), 0 without one.
    base: int = 0


def load_image(
    mm: AddressSpace, image: ElfImage, fd: int, name: str | None = None, *, bias: int | None = None
) -> LoadedProgram:
    """Map every ``PT_LOAD`` segment of ``image`` (open on ``fd``) into ``mm``.

    The mappings are named ``name`` in ``/proc/PID/maps`` (by default the path the
    image was read by; Linux shows the file's own path).

    Read-only segments that have a page range of their own are mapped straight from
    the program file (the stub receives ``fd`` itself); writable segments, and any
    segment sharing a page with a neighbour, become physmem pages holding a copy of
    the file bytes (their ``.bss`` reads as zeros).  The break starts on the page
    after the image.  ``bias`` overrides :meth:`.ElfImage.load_bias` (and then the
    break is left alone: a loader's image is not where the break goes).
    """
    layout = mm.layout
    own_place = bias is None
    if bias is None:
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
    if own_place:
        mm.brk_start = mm.brk = brk
    phdr = image.phdr_vaddr + bias if image.phdr_vaddr is not None else 0
    return LoadedProgram(
        bias=bias,
        entry=image.entry + bias,
        phdr=phdr,
        phnum=image.phnum,
        phent=image.phentsize,
        brk_start=brk,
        start=image.entry + bias,
    )


def load_program(
    mm: AddressSpace, image: ElfImage, fd: int, name: str | None = None, interp: Interpreter | None = None
) -> LoadedProgram:
    """Map the program and, for a dynamically linked one, its loader ``interp``.

    Raises :class:`GuestError` when the program does not fit, and
    :class:`UnloadableInterpreter` when the loader cannot be mapped (an image
    Linux would refuse only after the point of no return, or no room for it).
    """
    prog = load_image(mm, image, fd, name)
    if interp is None:
        return prog
    ld = interp.image
    if ld is None:
        raise UnloadableInterpreter(f"{interp.path}: not a loader that can be mapped")
    bias = 0
    if ld.is_pie:
        # Like an mmap of the whole image without a hint: the highest gap that fits,
        # aligned to the strictest p_align.
        align = ld.max_align
        span = ld.highest - ld.lowest
        try:
            gap = mm.find_gap(span + align - PAGE_SIZE)
        except SyscallError as exc:
            raise UnloadableInterpreter(f"{interp.path}: no room for the loader") from exc
        bias = ((gap + align - 1) & ~(align - 1)) - ld.lowest
    # An ET_EXEC loader goes at its own addresses over whatever is there, the
    # program included (Linux maps it MAP_FIXED).
    try:
        loaded = load_image(mm, ld, interp.fd, interp.path, bias=bias)
    except GuestError as exc:
        raise UnloadableInterpreter(str(exc)) from exc
    return LoadedProgram(
        bias=prog.bias,
        entry=prog.entry,
        phdr=prog.phdr,
        phnum=prog.phnum,
        phent=prog.phent,
        brk_start=prog.brk_start,
        start=loaded.entry,
        base=bias,
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
        base=prog.base,
        page_size=PAGE_SIZE,
        uid=uid,
        euid=euid,
        gid=gid,
        egid=egid,
    )
    img = build_stack(layout.stack_top, argv, envp, execfn, auxv, stack_size=layout.stack_size)
    mm.poke(img.sp, img.data)
    return img

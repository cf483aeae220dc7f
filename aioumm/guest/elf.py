"""Reading and checking x86-64 ELF programs.

A 64-bit little-endian x86-64 ``ET_EXEC`` or ``ET_DYN`` image is accepted.  One
with ``PT_INTERP`` names its dynamic loader there (:attr:`ElfImage.interp`; the
path is checked as Linux checks it: 2 to ``PATH_MAX`` bytes, ending with its NUL,
inside the file), which :mod:`.binfmt` opens and maps beside it.  An ``ET_DYN``
image without ``PT_INTERP`` (static-PIE, or a loader run directly) relocates
itself; one that still lists ``DT_NEEDED`` libraries is refused.  Everything the loader
will later trust (segment bounds, file offsets, alignment) is checked here, so a
malformed file fails with a :class:`GuestError` naming the path and the reason
instead of a confusing fault in the guest.
"""

from __future__ import annotations

import errno
import itertools
import mmap
import os
import stat
import struct
from dataclasses import dataclass

from .errors import GuestError
from .layout import PAGE_MASK, Layout, page_down, page_up

__all__ = [
    "BadInterpreterPath",
    "DynamicProgram",
    "ElfImage",
    "Segment",
    "check_program",
    "open_program",
    "parse_elf",
]

# e_ident and header values (System V ABI / the x86-64 supplement).
ELFMAG = b"\x7fELF"
ELFCLASS64 = 2
ELFDATA2LSB = 1
EV_CURRENT = 1
ET_EXEC = 2
ET_DYN = 3
EM_X86_64 = 62

PT_LOAD = 1
PT_DYNAMIC = 2
PT_INTERP = 3
PT_PHDR = 6
PT_TLS = 7
PT_GNU_STACK = 0x6474E551
PT_GNU_RELRO = 0x6474E552

PF_X = 1
PF_W = 2
PF_R = 4

DT_NULL = 0
DT_NEEDED = 1

EHDR = struct.Struct("<16sHHIQQQIHHHHHH")  # Elf64_Ehdr, 64 bytes
PHDR = struct.Struct("<IIQQQQQQ")  # Elf64_Phdr, 56 bytes
DYN = struct.Struct("<qQ")  # Elf64_Dyn

#: Linux refuses program header tables larger than 64 KiB; so do we.
MAX_PHDR_BYTES = 65536
#: The longest ``PT_INTERP`` (its NUL included) Linux accepts.
PATH_MAX = 4096

PROT_READ = mmap.PROT_READ
PROT_WRITE = mmap.PROT_WRITE
PROT_EXEC = mmap.PROT_EXEC


@dataclass(frozen=True)
class Segment:
    """One ``PT_LOAD`` (or ``PT_TLS``) entry, addresses not yet relocated."""

    vaddr: int
    memsz: int
    offset: int
    filesz: int
    flags: int
    align: int

    @property
    def prot(self) -> int:
        """The segment's ``PROT_*`` bits."""
        return (
            (PROT_READ if self.flags & PF_R else 0)
            | (PROT_WRITE if self.flags & PF_W else 0)
            | (PROT_EXEC if self.flags & PF_X else 0)
        )

    @property
    def end(self) -> int:
        """One past the last byte the segment occupies in memory."""
        return self.vaddr + self.memsz


@dataclass(frozen=True)
class ElfImage:
    """A checked program image (addresses as in the file, before relocation)."""

    path: str
    file_size: int
    e_type: int
    entry: int
    phoff: int
    phentsize: int
    phnum: int
    segments: tuple[Segment, ...]
    #: Where the program headers lie in memory (unrelocated), if they are loaded.
    phdr_vaddr: int | None
    tls: Segment | None
    relro: Segment | None
    exec_stack: bool
    #: The loader ``PT_INTERP`` names (without its NUL), or None for a static image.
    interp: bytes | None = None

    @property
    def is_pie(self) -> bool:
        """True for an ``ET_DYN`` image (PIE, static-PIE, a loader): loaded at a chosen base."""
        return self.e_type == ET_DYN

    @property
    def lowest(self) -> int:
        """Page-aligned lowest address the image occupies (unrelocated)."""
        return page_down(self.segments[0].vaddr)

    @property
    def highest(self) -> int:
        """Page-aligned end of the image (unrelocated)."""
        return page_up(max(s.end for s in self.segments))

    @property
    def max_align(self) -> int:
        """The strictest ``p_align`` among the loaded segments (at least a page)."""
        return max([PAGE_MASK + 1] + [s.align for s in self.segments])

    def load_bias(self, layout: Layout) -> int:
        """What to add to every address: 0 for ``ET_EXEC``, base - lowest for PIE."""
        if not self.is_pie:
            return 0
        align = self.max_align
        base = (layout.pie_base + align - 1) & ~(align - 1)
        return base - self.lowest

    def check_placement(self, layout: Layout, bias: int) -> None:
        """Refuse an image that would not fit in user space or would touch the stub."""
        lo, hi = self.lowest + bias, self.highest + bias
        if lo < layout.mmap_min or hi > layout.task_top:
            raise GuestError(
                f"{self.path}: segments at {lo:#x}..{hi:#x} lie outside the guest "
                f"address space ({layout.mmap_min:#x}..{layout.task_top:#x})"
            )
        for seg in self.segments:
            start, end = page_down(seg.vaddr + bias), page_up(seg.end + bias)
            if layout.touches_stub(start, end):
                raise GuestError(
                    f"{self.path}: segment at {start:#x}..{end:#x} overlaps the stub "
                    f"area {layout.stub_start:#x}..{layout.stub_end:#x}"
                )
        if layout.touches_stub(lo, hi) or hi > layout.mmap_top:
            raise GuestError(f"{self.path}: image at {lo:#x}..{hi:#x} collides with the stub area or the stack")


class DynamicProgram(GuestError):
    """An ``ET_DYN`` image that lists shared libraries but names no loader to load them."""


class BadInterpreterPath(GuestError):
    """A malformed ``PT_INTERP``; ``errno`` is what Linux's ``execve`` fails with."""

    def __init__(self, message: str, err: int) -> None:
        super().__init__(message)
        self.errno = err


def _fail(path: str, why: str) -> GuestError:
    return GuestError(f"{path}: {why}")


def parse_elf(path: str, data: bytes | mmap.mmap, file_size: int | None = None) -> ElfImage:
    """Parse and check the ELF image in ``data`` (the file's contents).

    ``path`` only names the file in error messages.  Raises :class:`GuestError`.
    """
    size = len(data) if file_size is None else file_size
    if size < 4 or bytes(data[:4]) != ELFMAG:
        raise _fail(path, "not an ELF file (bad magic)")
    if size < EHDR.size:
        raise _fail(path, f"truncated ELF file ({size} bytes, header needs {EHDR.size})")
    (
        ident,
        e_type,
        e_machine,
        e_version,
        e_entry,
        e_phoff,
        _shoff,
        _flags,
        e_ehsize,
        e_phentsize,
        e_phnum,
        _shentsize,
        _shnum,
        _shstrndx,
    ) = EHDR.unpack_from(data, 0)
    if ident[4] != ELFCLASS64:
        raise _fail(path, f"wrong ELF class {ident[4]} (need 64-bit)")
    if ident[5] != ELFDATA2LSB:
        raise _fail(path, "wrong byte order (need little-endian)")
    if ident[6] != EV_CURRENT or e_version != EV_CURRENT:
        raise _fail(path, "unknown ELF version")
    if e_machine != EM_X86_64:
        raise _fail(path, f"wrong machine {e_machine} (need x86-64, {EM_X86_64})")
    if e_type not in (ET_EXEC, ET_DYN):
        raise _fail(path, f"not an executable (e_type {e_type})")
    if e_ehsize < EHDR.size:
        raise _fail(path, "bad ELF header size")
    if e_phentsize != PHDR.size:
        raise _fail(path, f"bad program header size {e_phentsize}")
    if e_phnum == 0 or e_phnum * PHDR.size > MAX_PHDR_BYTES:
        raise _fail(path, f"bad program header count {e_phnum}")
    if e_phoff + e_phnum * PHDR.size > size:
        raise _fail(path, "truncated ELF file (program headers past the end)")

    loads: list[Segment] = []
    phdr_vaddr: int | None = None
    tls = relro = None
    exec_stack = False
    dynamic: tuple[int, int] | None = None
    interp: bytes | None = None
    for i in range(e_phnum):
        p_type, p_flags, p_offset, p_vaddr, _paddr, p_filesz, p_memsz, p_align = PHDR.unpack_from(
            data, e_phoff + i * PHDR.size
        )
        seg = Segment(p_vaddr, p_memsz, p_offset, p_filesz, p_flags, p_align)
        if p_type == PT_INTERP:
            if interp is None:  # Linux reads the first one only
                interp = _read_interp(path, data, size, p_offset, p_filesz)
        elif p_type == PT_LOAD:
            _check_load(path, seg, size)
            if p_memsz:
                loads.append(seg)
        elif p_type == PT_PHDR:
            phdr_vaddr = p_vaddr
        elif p_type == PT_TLS:
            tls = seg
        elif p_type == PT_GNU_RELRO:
            relro = seg
        elif p_type == PT_GNU_STACK:
            exec_stack = bool(p_flags & PF_X)
        elif p_type == PT_DYNAMIC:
            if p_offset + p_filesz > size:
                raise _fail(path, "truncated ELF file (PT_DYNAMIC past the end)")
            dynamic = (p_offset, p_filesz)

    if not loads:
        raise _fail(path, "no loadable segments")
    for a, b in itertools.pairwise(loads):
        if b.vaddr < a.end:
            raise _fail(path, f"PT_LOAD segments overlap or are out of order at {b.vaddr:#x}")
    if e_type == ET_DYN and interp is None and dynamic is not None and _needs_libraries(data, *dynamic):
        raise DynamicProgram(f"{path}: needs shared libraries (DT_NEEDED) but names no loader (PT_INTERP)")
    if not any(s.vaddr <= e_entry < s.end and s.flags & PF_X for s in loads):
        raise _fail(path, f"entry point {e_entry:#x} is not in an executable segment")
    if phdr_vaddr is None:
        # No PT_PHDR: the headers are visible if a segment maps their file range.
        for s in loads:
            if s.offset <= e_phoff and e_phoff + e_phnum * PHDR.size <= s.offset + s.filesz:
                phdr_vaddr = s.vaddr + (e_phoff - s.offset)
                break
    return ElfImage(
        path=path,
        file_size=size,
        e_type=e_type,
        entry=e_entry,
        phoff=e_phoff,
        phentsize=e_phentsize,
        phnum=e_phnum,
        segments=tuple(loads),
        phdr_vaddr=phdr_vaddr,
        tls=tls,
        relro=relro,
        exec_stack=exec_stack,
        interp=interp,
    )


def _read_interp(path: str, data: bytes | mmap.mmap, size: int, offset: int, length: int) -> bytes:
    """The loader's path from ``PT_INTERP``, checked as ``load_elf_binary`` checks it."""
    if length < 2 or length > PATH_MAX:
        raise BadInterpreterPath(f"{path}: bad PT_INTERP size {length}", errno.ENOEXEC)
    if offset + length > size:
        raise BadInterpreterPath(f"{path}: truncated ELF file (PT_INTERP past the end)", errno.EIO)
    name = bytes(data[offset : offset + length])
    if name[-1] != 0:
        raise BadInterpreterPath(f"{path}: PT_INTERP is not NUL-terminated", errno.ENOEXEC)
    return name[:-1].split(b"\0", 1)[0]


def _check_load(path: str, seg: Segment, size: int) -> None:
    if seg.filesz > seg.memsz:
        raise _fail(path, f"segment at {seg.vaddr:#x} has p_filesz > p_memsz")
    if seg.offset + seg.filesz > size:
        raise _fail(path, f"truncated ELF file (segment at {seg.vaddr:#x} past the end)")
    if seg.align > 1 and seg.align & (seg.align - 1):
        raise _fail(path, f"segment at {seg.vaddr:#x} has a bad alignment {seg.align:#x}")
    if (seg.vaddr - seg.offset) & PAGE_MASK:
        raise _fail(path, f"segment at {seg.vaddr:#x}: address and file offset disagree modulo the page size")
    if seg.vaddr + seg.memsz >= 1 << 47:
        raise _fail(path, f"segment at {seg.vaddr:#x} lies outside user space")


def _needs_libraries(data: bytes | mmap.mmap, offset: int, length: int) -> bool:
    for pos in range(offset, offset + length - DYN.size + 1, DYN.size):
        tag, _ = DYN.unpack_from(data, pos)
        if tag == DT_NULL:
            return False
        if tag == DT_NEEDED:
            return True
    return False


def open_program(path: str, host_path: str | None = None) -> tuple[ElfImage, int]:
    """Open and check a program; return the image and a controller-owned descriptor.

    ``path`` is how the guest names the program (used in messages), ``host_path``
    where the controller finds it (default: ``path``).  The descriptor is opened
    ``O_RDONLY | O_CLOEXEC``; the caller owns it.  Every failure is a
    :class:`GuestError` naming the path and the reason.
    """
    where = path if host_path is None else host_path
    try:
        fd = os.open(where, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise _fail(path, os.strerror(exc.errno or 0).lower()) from exc
    try:
        return check_program(path, fd), fd
    except BaseException:
        os.close(fd)
        raise


def check_program(path: str, fd: int) -> ElfImage:
    """Check the program open on ``fd`` (a regular, executable x86-64 ELF file)."""
    st = os.fstat(fd)
    if stat.S_ISDIR(st.st_mode):
        raise _fail(path, "is a directory")
    if not stat.S_ISREG(st.st_mode):
        raise _fail(path, "not a regular file")
    if not st.st_mode & 0o111 or not os.access(f"/proc/self/fd/{fd}", os.X_OK):
        raise _fail(path, "permission denied (not executable)")
    if st.st_size == 0:
        raise _fail(path, "empty file (not an ELF file)")
    with mmap.mmap(fd, st.st_size, prot=mmap.PROT_READ) as data:
        return parse_elf(path, data)

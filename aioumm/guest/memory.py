"""The guest address space: what is mapped where, and guest memory access.

Every guest mapping is backed by a file the controller owns *and maps itself*,
so when a syscall handler reads or writes guest memory it does so in place,
through the controller's own mapping, without asking the stub (zero-copy):

* :class:`PhysMem` -- one sparse memfd per guest ("physical memory"), made very
  large and mapped once in the controller with ``MAP_SHARED | MAP_NORESERVE``.
  Anonymous memory, the break, the stack and every writable program segment are
  page ranges of it, handed out by a :class:`PageAllocator`.  A freed range is
  punched out of the file (``MADV_REMOVE``), which gives the memory back to the
  host and guarantees the next user of those pages reads zeros.
* :class:`FileBacking` -- a file mapped as it is: read-only program segments are
  mapped in the stub straight from the program's own descriptor (the core passes it
  over the stub's socket), and the controller maps the same file read-only.

A :class:`Vma` says which backing (and which offset in it) serves a range of guest
addresses.  Every change to the list is also queued on the stub as an
``mmap``/``munmap``/``mprotect`` record; the core runs the queued batch before the
guest resumes, and the guest is stopped meanwhile, so the controller's view and the
stub's never disagree where the guest could see it.

Address spaces are copied for ``fork`` (:meth:`AddressSpace.fork_copy`: a new
physmem file receives only the pages that hold data, file-backed and shared
mappings are shared) and shared for ``vfork`` (:meth:`AddressSpace.share`: a
second stub maps the same physmem file ``MAP_SHARED`` and every later change is
queued on both stubs).  Anonymous ``MAP_SHARED`` memory has a file of its own
(:class:`SharedAnon`), so a forked child and its parent keep sharing it.

Guest pointers are hostile.  The access helpers raise :class:`GuestFault` (the
syscall then fails with ``EFAULT``) for anything not mapped with the needed
protection; the ``sys_*`` methods validate their arguments the way Linux does and
raise :class:`SyscallError` with the errno Linux gives.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import itertools
import mmap
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Protocol

from .errors import GuestFault, SyscallError
from .layout import PAGE_MASK, PAGE_SIZE, Layout, page_down, page_up

__all__ = [
    "NULL_MAPPER",
    "AddressSpace",
    "Backing",
    "FileBacking",
    "PageAllocator",
    "PhysMem",
    "SharedAnon",
    "StubMapper",
    "Vma",
]

PROT_NONE = 0
PROT_READ = mmap.PROT_READ
PROT_WRITE = mmap.PROT_WRITE
PROT_EXEC = mmap.PROT_EXEC
PROT_SEM = 0x8
PROT_GROWSDOWN = 0x01000000
PROT_GROWSUP = 0x02000000
PROT_RWX = PROT_READ | PROT_WRITE | PROT_EXEC

MAP_SHARED = 0x01
MAP_PRIVATE = 0x02
MAP_SHARED_VALIDATE = 0x03
MAP_TYPE = 0x0F
MAP_FIXED = 0x10
MAP_ANONYMOUS = 0x20
MAP_GROWSDOWN = 0x0100
MAP_DENYWRITE = 0x0800
MAP_EXECUTABLE = 0x1000
MAP_LOCKED = 0x2000
MAP_NORESERVE = 0x4000
MAP_POPULATE = 0x8000
MAP_NONBLOCK = 0x10000
MAP_STACK = 0x20000
MAP_HUGETLB = 0x40000
MAP_SYNC = 0x80000
MAP_FIXED_NOREPLACE = 0x100000
#: Flags Linux accepts with MAP_SHARED_VALIDATE; anything else is EOPNOTSUPP there.
_MAP_VALIDATE_KNOWN = (
    MAP_TYPE
    | MAP_FIXED
    | MAP_ANONYMOUS
    | MAP_GROWSDOWN
    | MAP_DENYWRITE
    | MAP_EXECUTABLE
    | MAP_LOCKED
    | MAP_NORESERVE
    | MAP_POPULATE
    | MAP_NONBLOCK
    | MAP_STACK
    | MAP_HUGETLB
    | MAP_FIXED_NOREPLACE
)

MREMAP_MAYMOVE = 1
MREMAP_FIXED = 2
MREMAP_DONTUNMAP = 4

MADV_NORMAL = 0
MADV_DONTNEED = 4
MADV_FREE = 8
MADV_REMOVE = 9
#: The advice this kernel knows (madvise_behavior_valid): 0-4, 8-24 and the guard
#: regions (102, 103); MADV_COLLAPSE and the memory-failure tests are configured out.
_MADV_KNOWN = frozenset((*range(5), *range(8, 25), 102, 103))
MS_ASYNC = 1
MS_INVALIDATE = 2
MS_SYNC = 4

#: Linux's default ``vm.max_map_count``: past it, mapping calls fail with ENOMEM.
MAX_MAP_COUNT = 65530
#: Default size of a guest's physical-memory file; sparse, so it costs nothing until used.
DEFAULT_PHYSMEM_SIZE = 64 << 30

_MAP_NORESERVE_HOST = getattr(mmap, "MAP_NORESERVE", 0x4000)
_U64 = struct.Struct("<Q")
_I32 = struct.Struct("<i")


class StubMapper(Protocol):
    """The part of the core's stub the address space drives: queued map records."""

    def mmap(
        self, addr: int, length: int, prot: int, fd: int = -1, offset: int = 0, *, shared: bool = True
    ) -> None: ...

    def munmap(self, addr: int, length: int) -> None: ...

    def mprotect(self, addr: int, length: int, prot: int) -> None: ...


class _NullMapper:
    """Drops every record: for an address space being built before it has a stub."""

    def mmap(self, addr: int, length: int, prot: int, fd: int = -1, offset: int = 0, *, shared: bool = True) -> None:
        pass

    def munmap(self, addr: int, length: int) -> None:
        pass

    def mprotect(self, addr: int, length: int, prot: int) -> None:
        pass


#: A mapper that drops every record (see :meth:`AddressSpace.bind`).
NULL_MAPPER: StubMapper = _NullMapper()


class _Mirror:
    """Queues every record on each of several stubs that map one address space."""

    def __init__(self, stubs: list[StubMapper], records: int = 0) -> None:
        self.stubs = stubs
        #: Records queued so far (a thread's mapping change waits for the others: see threads.py).
        self.records = records

    def mmap(self, addr: int, length: int, prot: int, fd: int = -1, offset: int = 0, *, shared: bool = True) -> None:
        self.records += 1
        for s in self.stubs:
            s.mmap(addr, length, prot, fd, offset, shared=shared)

    def munmap(self, addr: int, length: int) -> None:
        self.records += 1
        for s in self.stubs:
            s.munmap(addr, length)

    def mprotect(self, addr: int, length: int, prot: int) -> None:
        self.records += 1
        for s in self.stubs:
            s.mprotect(addr, length, prot)


class PageAllocator:
    """First-fit allocator of page-aligned byte ranges in ``[0, size)``.

    It keeps only the free ranges (sorted, coalesced), so any part of an allocated
    range may be freed on its own: a VMA split in two frees its halves separately.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._free: list[tuple[int, int]] = [(0, size)] if size else []

    @property
    def free_bytes(self) -> int:
        """Bytes not allocated."""
        return sum(end - start for start, end in self._free)

    def ranges(self) -> list[tuple[int, int]]:
        """The free ranges, as ``(start, end)`` pairs (for tests and debugging)."""
        return list(self._free)

    def copy(self) -> PageAllocator:
        """An allocator with the same ranges allocated."""
        twin = PageAllocator(0)
        twin.size = self.size
        twin._free = list(self._free)
        return twin

    def alloc(self, length: int, at: int | None = None) -> int | None:
        """Allocate ``length`` bytes; at offset ``at`` if given (None if not free there)."""
        if length <= 0 or length & PAGE_MASK:
            raise ValueError("allocation length must be a positive multiple of the page size")
        if at is not None:
            i = bisect.bisect_right(self._free, (at, self.size + 1)) - 1
            if i < 0:
                return None
            start, end = self._free[i]
            if not (start <= at and at + length <= end):
                return None
            self._take(i, at, at + length)
            return at
        for i, (start, end) in enumerate(self._free):
            if end - start >= length:
                self._take(i, start, start + length)
                return start
        return None

    def _take(self, i: int, a: int, b: int) -> None:
        start, end = self._free[i]
        pieces = [(s, e) for s, e in ((start, a), (b, end)) if e > s]
        self._free[i : i + 1] = pieces

    def free(self, start: int, length: int) -> None:
        """Give ``[start, start + length)`` back; it must be allocated now."""
        end = start + length
        if length <= 0 or start < 0 or end > self.size:
            raise ValueError("free outside the allocator")
        i = bisect.bisect_left(self._free, (start, start))
        if (i > 0 and self._free[i - 1][1] > start) or (i < len(self._free) and self._free[i][0] < end):
            raise ValueError(f"double free of {start:#x}+{length:#x}")
        if i > 0 and self._free[i - 1][1] == start:
            start = self._free[i - 1][0]
            i -= 1
            del self._free[i]
        if i < len(self._free) and self._free[i][0] == end:
            end = self._free[i][1]
            del self._free[i]
        self._free.insert(i, (start, end))


def _shared_memfd(name: str, size: int) -> tuple[int, mmap.mmap]:
    """A new sparse memfd of ``size`` bytes and the controller's shared mapping of it."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, size)
        return fd, mmap.mmap(
            fd, size, flags=mmap.MAP_SHARED | _MAP_NORESERVE_HOST, prot=mmap.PROT_READ | mmap.PROT_WRITE
        )
    except BaseException:
        os.close(fd)
        raise


class Backing:
    """Something both the stub and the controller map: a file and its controller view."""

    #: The controller's descriptor, handed to ``stub.mmap``.
    fd: int
    #: Whether the stub maps it ``MAP_SHARED`` (otherwise ``MAP_PRIVATE``).
    stub_shared: bool
    #: Whether the controller may write through :attr:`view`.
    writable: bool
    #: The controller's own mapping of the file.
    view: memoryview
    #: The raw mapping (for ``find``).
    map: mmap.mmap | None

    def release(self, offset: int, length: int) -> None:
        """A guest range backed by ``[offset, offset + length)`` went away."""

    def acquire(self) -> None:
        """One more VMA refers to this backing."""

    def drop(self) -> None:
        """One VMA less refers to this backing."""

    @property
    def size(self) -> int:
        """Bytes readable through :attr:`view` (past it, a mapping reads zeros)."""
        return len(self.view)

    def close(self) -> None:
        """Unmap and close now (every view of it must be released first); safe to call twice."""
        if self.fd < 0:
            return
        _unmap(self.view, self.map)
        self.map = None
        os.close(self.fd)
        self.fd = -1

    def find_nul(self, start: int, end: int) -> int:
        """Offset of the first NUL byte in ``[start, end)``, or -1."""
        end = min(end, self.size)
        if start >= end:
            return -1
        if self.map is not None:
            return self.map.find(b"\0", start, end)
        pos = bytes(self.view[start:end]).find(b"\0")
        return -1 if pos < 0 else start + pos


class PhysMem(Backing):
    """A guest's sparse "physical memory": one large memfd, mapped once here."""

    def __init__(self, size: int = DEFAULT_PHYSMEM_SIZE, name: str = "aioumm-physmem") -> None:
        if size <= 0 or size & PAGE_MASK:
            raise ValueError("physmem size must be a positive multiple of the page size")
        self.stub_shared = True
        self.writable = True
        self.fd, self.map = _shared_memfd(name, size)
        self.view = memoryview(self.map)
        self.pages = PageAllocator(size)
        #: Hold freed ranges back until every stub has dropped them (threads: see threads.py).
        self.defer_release = False
        self._deferred: list[tuple[int, int]] = []

    def allocate(self, length: int, near: int | None = None) -> int:
        """Allocate ``length`` bytes of zeroed pages; right at ``near`` if that is free."""
        if near is not None and near >= 0 and near + length <= self.pages.size:
            got = self.pages.alloc(length, at=near)
            if got is not None:
                return got
        got = self.pages.alloc(length)
        if got is None:
            raise SyscallError(errno.ENOMEM)
        return got

    def release(self, offset: int, length: int) -> None:
        if self.defer_release:
            # Another thread's stub may still map the range: it must not be handed
            # out again before that stub has stopped (threads.py explains).
            self._deferred.append((offset, length))
            return
        self.release_now(offset, length)

    def take_deferred(self) -> list[tuple[int, int]]:
        """The ranges freed since the last call, still held back."""
        taken, self._deferred = self._deferred, []
        return taken

    @property
    def has_deferred(self) -> bool:
        """Whether freed ranges are held back."""
        return bool(self._deferred)

    def release_now(self, offset: int, length: int) -> None:
        """Give a freed range back to the allocator and the host at once."""
        # Punching the hole frees the host memory and zeroes the range for its next
        # user; the stub's own mapping of it is dropped by the same punch.
        assert self.map is not None
        self.map.madvise(mmap.MADV_REMOVE, offset, length)
        self.pages.free(offset, length)

    def zero(self, offset: int, length: int) -> None:
        """Make ``[offset, offset + length)`` read as zeros (and free its memory)."""
        assert self.map is not None
        self.map.madvise(mmap.MADV_REMOVE, offset, length)

    def copy_from(self, other: PhysMem) -> None:
        """Become a copy of ``other`` (same size): the same ranges allocated, the same bytes.

        Only the parts of the file that hold data are copied (``SEEK_DATA`` /
        ``SEEK_HOLE``): a guest's 8 MiB stack reserve or a large untouched
        allocation costs nothing.
        """
        if other.size != self.size:
            raise ValueError("physmem files of different sizes")
        self.pages = other.pages.copy()
        self._copy_data(other)
        for offset, length in other._deferred:
            self.release_now(offset, length)  # no mapping of the copy uses them

    def _copy_data(self, other: PhysMem) -> None:
        pos = 0
        while True:
            try:
                start = os.lseek(other.fd, pos, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # no data past pos
                    return
                raise
            end = os.lseek(other.fd, start, os.SEEK_HOLE)
            self._copy_range(other, start, end)
            pos = end

    def _copy_range(self, other: PhysMem, start: int, end: int) -> None:
        pos = start
        while pos < end:
            try:
                n = os.copy_file_range(other.fd, self.fd, end - pos, pos, pos)
            except OSError:
                n = 0
            if n <= 0:
                # No in-kernel copy between these files: go through both mappings.
                self.view[pos:end] = other.view[pos:end]
                return
            pos += n


class _Counted(Backing):
    """A backing owned by the VMAs that use it (across address spaces): the last one closes it."""

    _refs = 0

    def acquire(self) -> None:
        self._refs += 1

    def drop(self) -> None:
        self._refs -= 1
        if self._refs <= 0:
            self.close()


class SharedAnon(_Counted):
    """Anonymous ``MAP_SHARED`` memory: a memfd of its own, mapped here and in the stub.

    Every address space that maps it (a parent and the children it forked) maps
    the same file, so a write by one is seen by all, as on Linux.  Unmapping part
    of it frees nothing; the file goes with its last mapping.
    """

    def __init__(self, length: int) -> None:
        self.stub_shared = True
        self.writable = True
        self.fd, self.map = _shared_memfd("aioumm-shared-anon", length)
        self.view = memoryview(self.map)


class FileBacking(_Counted):
    """A host file mapped as it is, in the stub and (read-only or shared) here.

    The backing holds its own duplicate of the descriptor and closes it, and its
    mapping, once the last VMA using it is gone.
    """

    def __init__(self, fd: int, *, writable: bool = False, stub_shared: bool = False) -> None:
        self.fd = os.dup(fd)
        os.set_inheritable(self.fd, False)
        self.stub_shared = stub_shared
        self.writable = writable
        size = os.fstat(self.fd).st_size
        self.map = None
        if size:
            prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
            self.map = mmap.mmap(self.fd, size, flags=mmap.MAP_SHARED, prot=prot)
            self.view = memoryview(self.map)
        else:
            self.view = memoryview(b"")


@dataclass
class Vma:
    """A range of guest addresses served by one backing, at one protection."""

    start: int
    end: int
    prot: int
    backing: Backing
    #: Offset in the backing of :attr:`start`.
    offset: int
    #: ``MAP_SHARED`` semantics for the guest (matters once address spaces are copied).
    shared: bool = False
    #: What ``/proc/self/maps`` would call it: a path, ``[heap]``, ``[stack]``, or "".
    name: str = ""

    @property
    def length(self) -> int:
        return self.end - self.start

    def piece(self, start: int, end: int) -> Vma:
        """The part of this VMA in ``[start, end)`` (which must be inside it)."""
        return replace(self, start=start, end=end, offset=self.offset + (start - self.start))


class AddressSpace:
    """One guest's mappings, the queued stub records that mirror them, and access."""

    def __init__(self, stub: StubMapper, layout: Layout, physmem: PhysMem | None = None) -> None:
        self.stub = stub
        self.layout = layout
        self.physmem = physmem if physmem is not None else PhysMem()
        self._vmas: list[Vma] = []
        self.brk_start = 0
        self.brk = 0
        #: Every stub that maps this address space (more than one during a vfork).
        self._users: list[StubMapper] = [stub]

    # ----------------------------------------------------------------- queries

    @property
    def vmas(self) -> list[Vma]:
        """The mappings, sorted by address (a copy)."""
        return list(self._vmas)

    def find(self, addr: int) -> Vma | None:
        """The VMA containing ``addr``, if any."""
        i = bisect.bisect_right(self._vmas, addr, key=lambda v: v.start) - 1
        if i >= 0 and addr < self._vmas[i].end:
            return self._vmas[i]
        return None

    def _overlapping(self, start: int, end: int) -> tuple[int, int]:
        """Index range ``[i, j)`` of the VMAs that overlap ``[start, end)``."""
        i = bisect.bisect_right(self._vmas, start, key=lambda v: v.start) - 1
        if i < 0 or self._vmas[i].end <= start:
            i += 1
        j = bisect.bisect_left(self._vmas, end, key=lambda v: v.start)
        return i, j

    def is_free(self, start: int, end: int) -> bool:
        """True if nothing is mapped in ``[start, end)`` and it is usable guest space."""
        if not self.layout.user_range_ok(start, end) or start < self.layout.mmap_min:
            return False
        i, j = self._overlapping(start, end)
        return i >= j

    def any_mapped(self, start: int, end: int) -> bool:
        """True if some guest mapping lies in ``[start, end)`` (wherever that is)."""
        i, j = self._overlapping(start, end)
        return i < j

    def is_mapped(self, start: int, end: int) -> bool:
        """True if every page of ``[start, end)`` is mapped."""
        pos = start
        i, j = self._overlapping(start, end)
        for v in self._vmas[i:j]:
            if v.start > pos:
                return False
            pos = v.end
        return pos >= end

    # ------------------------------------------------------- primitive changes

    def _split_at(self, addr: int) -> None:
        v = self.find(addr)
        if v is None or v.start == addr:
            return
        i = self._vmas.index(v)
        left, right = v.piece(v.start, addr), v.piece(addr, v.end)
        right.backing.acquire()
        self._vmas[i : i + 1] = [left, right]

    def _cut(self, start: int, end: int) -> list[Vma]:
        """Remove ``[start, end)`` from the list (splitting edges); return the pieces."""
        self._split_at(start)
        self._split_at(end)
        i, j = self._overlapping(start, end)
        removed = self._vmas[i:j]
        del self._vmas[i:j]
        return removed

    def _free(self, pieces: list[Vma]) -> None:
        for v in pieces:
            v.backing.release(v.offset, v.length)
            v.backing.drop()

    def _insert(self, vma: Vma) -> None:
        if len(self._vmas) >= MAX_MAP_COUNT:
            raise SyscallError(errno.ENOMEM)
        vma.backing.acquire()
        i = bisect.bisect_left(self._vmas, vma.start, key=lambda v: v.start)
        self._vmas.insert(i, vma)
        self._merge_around(i)

    def _merge_around(self, i: int) -> None:
        self._merge_span(i, i + 1)

    def _merge_span(self, lo: int, hi: int) -> None:
        # Neighbours that continue each other in the same backing become one VMA, so
        # a break grown a page at a time stays one mapping in the list.  Checks the
        # pairs from (lo - 1, lo) up to (hi - 1, hi).
        k = max(lo - 1, 0)
        while k < hi and k + 1 < len(self._vmas):
            a, b = self._vmas[k], self._vmas[k + 1]
            if (
                a.end == b.start
                and a.backing is b.backing
                and a.prot == b.prot
                and a.shared == b.shared
                and a.name == b.name
                and b.offset == a.offset + a.length
            ):
                a.end = b.end
                del self._vmas[k + 1]
                b.backing.drop()
                hi -= 1
            else:
                k += 1

    def _queue_map(self, vma: Vma) -> None:
        self.stub.mmap(
            vma.start,
            vma.length,
            vma.prot,
            vma.backing.fd,
            vma.offset,
            shared=vma.backing.stub_shared,
        )

    def map_anon(
        self,
        start: int,
        length: int,
        prot: int,
        *,
        shared: bool = False,
        name: str = "",
        near: int | None = None,
    ) -> Vma:
        """Map fresh zeroed memory at ``[start, start + length)`` (replacing what is there).

        Private memory is a range of physmem; shared memory (``MAP_SHARED |
        MAP_ANONYMOUS``) a :class:`SharedAnon` file of its own, so that it stays
        shared with forked children.  The caller has checked the range is
        page-aligned guest space.
        """
        if shared:
            if length > self.physmem.size:
                raise SyscallError(errno.ENOMEM)
            try:
                backing = SharedAnon(length)
            except OSError as exc:
                raise SyscallError(errno.ENOMEM) from exc
            backing.acquire()  # held until the VMA holds it
            try:
                vma = Vma(start, start + length, prot, backing, 0, True, name)
                self._replace(vma)
            finally:
                backing.drop()
            return vma
        off = self.physmem.allocate(length, near)
        vma = Vma(start, start + length, prot, self.physmem, off, shared, name)
        self._replace(vma)
        return vma

    def map_backing(
        self,
        start: int,
        length: int,
        prot: int,
        backing: Backing,
        offset: int,
        *,
        shared: bool = False,
        name: str = "",
    ) -> Vma:
        """Map ``backing`` at ``offset`` on ``[start, start + length)`` (replacing)."""
        vma = Vma(start, start + length, prot, backing, offset, shared, name)
        self._replace(vma)
        return vma

    def _replace(self, vma: Vma) -> None:
        old = self._cut(vma.start, vma.end)
        try:
            self._insert(vma)
        except SyscallError:
            # Like a failed MAP_FIXED on Linux, the old contents are gone either way.
            vma.backing.release(vma.offset, vma.length)
            if old:
                self.stub.munmap(vma.start, vma.length)
            raise
        finally:
            self._free(old)
        # MAP_FIXED in the stub replaces whatever the old pieces left there.
        self._queue_map(vma)

    def unmap(self, start: int, end: int) -> None:
        """Unmap ``[start, end)`` (page-aligned); unmapped parts are fine."""
        pieces = self._cut(start, end)
        if pieces:
            self._free(pieces)
            self.stub.munmap(start, end - start)

    def protect(self, start: int, end: int, prot: int) -> None:
        """Change the protection of ``[start, end)``, which must be fully mapped."""
        i, j = self._overlapping(start, end)
        if prot & PROT_WRITE and any(v.shared and not v.backing.writable for v in self._vmas[i:j]):
            raise SyscallError(errno.EACCES)  # a shared mapping of a read-only file
        self._split_at(start)
        self._split_at(end)
        i, j = self._overlapping(start, end)
        run_start: int | None = None
        for k in range(i, j):
            v = self._vmas[k]
            if prot & PROT_WRITE and not v.backing.writable:
                # A private file mapping about to be written: from now on it is the
                # guest's own copy, so move it into physmem (the stub's own COW copy
                # would be invisible to the controller).
                if run_start is not None:
                    self.stub.mprotect(run_start, v.start - run_start, prot)
                    run_start = None
                self._privatize(k, prot)
                continue
            v.prot = prot
            if run_start is None:
                run_start = v.start
        if run_start is not None:
            self.stub.mprotect(run_start, end - run_start, prot)
        self._merge_span(i, j)

    def _privatize(self, k: int, prot: int) -> None:
        v = self._vmas[k]
        off = self.physmem.allocate(v.length)
        data = self._backing_bytes(v.backing, v.offset, v.length)
        self.physmem.view[off : off + len(data)] = data
        new = Vma(v.start, v.end, prot, self.physmem, off, v.shared, v.name)
        new.backing.acquire()
        self._vmas[k] = new
        v.backing.drop()
        self._queue_map(new)

    @staticmethod
    def _backing_bytes(b: Backing, off: int, n: int) -> bytes:
        got = bytes(b.view[off : min(off + n, b.size)]) if off < b.size else b""
        return got + bytes(n - len(got))

    # ---------------------------------------------------------- guest syscalls

    def _check_range(self, addr: int, length: int) -> int:
        """Page-align a (addr, length) syscall range; return its end (EINVAL/ENOMEM)."""
        if addr & PAGE_MASK:
            raise SyscallError(errno.EINVAL)
        end = addr + page_up(length)
        if end > self.layout.task_top or end < addr:
            raise SyscallError(errno.ENOMEM)
        return end

    def find_gap(self, length: int, below: int | None = None) -> int:
        """The highest free, page-aligned ``length``-byte range under ``mmap_top``."""
        top = self.layout.mmap_top if below is None else below
        floor = self.layout.mmap_min
        blocks = [(v.start, v.end) for v in self._vmas if v.start < top]
        blocks.append((self.layout.stub_start, self.layout.stub_end))
        blocks.sort()
        hi = top
        for start, end in reversed(blocks):
            if end >= hi:
                hi = min(hi, start)
                continue
            if hi - end >= length:
                return hi - length
            hi = start
        if hi - floor >= length:
            return hi - length
        raise SyscallError(errno.ENOMEM)

    def sys_mmap(
        self,
        addr: int,
        length: int,
        prot: int,
        flags: int,
        file: FileSource | None = None,
        offset: int = 0,
    ) -> int:
        """``mmap(2)``: ``file`` is the opened file for a non-anonymous mapping."""
        if length == 0:
            raise SyscallError(errno.EINVAL)
        prot &= PROT_RWX | PROT_SEM  # mmap ignores other bits (mprotect refuses them)
        maptype = flags & MAP_TYPE
        if maptype not in (MAP_SHARED, MAP_PRIVATE, MAP_SHARED_VALIDATE):
            raise SyscallError(errno.EINVAL)
        if maptype == MAP_SHARED_VALIDATE and flags & MAP_ANONYMOUS:
            raise SyscallError(errno.EINVAL)  # a type only file mappings have
        if maptype == MAP_SHARED_VALIDATE and flags & ~_MAP_VALIDATE_KNOWN:
            raise SyscallError(errno.EOPNOTSUPP)
        if flags & MAP_HUGETLB:
            raise SyscallError(errno.EINVAL)
        shared = maptype != MAP_PRIVATE
        size = page_up(length)
        if size == 0 or size > self.layout.task_top:
            raise SyscallError(errno.ENOMEM)
        anon = bool(flags & MAP_ANONYMOUS)
        if not anon and offset & PAGE_MASK:
            raise SyscallError(errno.EINVAL)
        if not anon and offset + size >= 1 << 63:
            raise SyscallError(errno.EOVERFLOW)

        fixed = bool(flags & (MAP_FIXED | MAP_FIXED_NOREPLACE))
        if fixed:
            if addr & PAGE_MASK:
                raise SyscallError(errno.EINVAL)
            end = addr + size
            if addr < self.layout.mmap_min:
                raise SyscallError(errno.EPERM)
            if not self.layout.user_range_ok(addr, end):
                # The stub pages are never the guest's: as if they lay beyond TASK_SIZE.
                raise SyscallError(errno.ENOMEM)
            if flags & MAP_FIXED_NOREPLACE and not self.is_free(addr, end):
                raise SyscallError(errno.EEXIST)
            start = addr
        else:
            hint = page_down(addr)
            start = hint if hint and self.is_free(hint, hint + size) else self.find_gap(size)

        if anon or file is None:
            if not anon:
                raise SyscallError(errno.EBADF)
            self.map_anon(start, size, prot, shared=shared)
            return start
        return file.map_into(self, start, size, prot, shared, offset)

    def sys_munmap(self, addr: int, length: int) -> int:
        """``munmap(2)``."""
        if length == 0 or addr & PAGE_MASK:
            raise SyscallError(errno.EINVAL)
        end = addr + page_up(length)
        if end > self.layout.task_top or end < addr or self.layout.touches_stub(addr, end):
            raise SyscallError(errno.EINVAL)
        self.unmap(addr, end)
        return 0

    def sys_mprotect(self, addr: int, length: int, prot: int) -> int:
        """``mprotect(2)``."""
        if prot & ~(PROT_RWX | PROT_SEM | PROT_GROWSDOWN | PROT_GROWSUP):
            raise SyscallError(errno.EINVAL)
        if prot & PROT_GROWSDOWN and prot & PROT_GROWSUP:
            raise SyscallError(errno.EINVAL)
        end = self._check_range(addr, length)
        if end == addr:
            return 0
        if self.layout.touches_stub(addr, end) or not self.is_mapped(addr, end):
            raise SyscallError(errno.ENOMEM)
        self.protect(addr, end, prot & (PROT_RWX | PROT_SEM))
        return 0

    def sys_madvise(self, addr: int, length: int, advice: int) -> int:
        """``madvise(2)``: DONTNEED/FREE zero private memory, REMOVE shared memory; the rest is a hint.

        As Linux: the advice is taken for the mapped parts of the range, then a
        hole in it is ``ENOMEM``; FREE is for private anonymous memory only, REMOVE
        for shared memory only (``EINVAL``, or ``EACCES`` for a private file copy).
        """
        if advice not in _MADV_KNOWN or addr & PAGE_MASK:
            raise SyscallError(errno.EINVAL)
        end = addr + page_up(length)
        if end < addr or (length and end == addr) or end > self.layout.task_top:
            raise SyscallError(errno.EINVAL)
        if end == addr:
            return 0
        if self.layout.touches_stub(addr, end):
            raise SyscallError(errno.ENOMEM)
        i, j = self._overlapping(addr, end)
        for v in self._vmas[i:j]:
            a, b = max(v.start, addr), min(v.end, end)
            if advice == MADV_REMOVE:
                if not v.shared:
                    raise SyscallError(errno.EACCES if v.name.startswith("/") else errno.EINVAL)
                # A hole punched in the file (a shared memfd too), seen by every mapping of it.
                host = getattr(v.backing, "map", None)
                if host is not None:
                    with contextlib.suppress(OSError, ValueError):  # past the end of the file
                        host.madvise(mmap.MADV_REMOVE, v.offset + (a - v.start), b - a)
            elif advice in (MADV_DONTNEED, MADV_FREE) and v.backing is self.physmem:
                if advice == MADV_FREE and v.name.startswith("/"):
                    raise SyscallError(errno.EINVAL)  # a file's pages, not anonymous ones
                self.physmem.zero(v.offset + (a - v.start), b - a)
            elif advice == MADV_FREE:
                raise SyscallError(errno.EINVAL)
        if not self.is_mapped(addr, end):
            raise SyscallError(errno.ENOMEM)
        return 0

    def sys_msync(self, addr: int, length: int, flags: int) -> int:
        """``msync(2)``: ``MS_SYNC`` writes a shared file mapping's file out; the checks are Linux's."""
        if flags & ~(MS_ASYNC | MS_INVALIDATE | MS_SYNC) or addr & PAGE_MASK:
            raise SyscallError(errno.EINVAL)
        if flags & MS_ASYNC and flags & MS_SYNC:
            raise SyscallError(errno.EINVAL)
        end = addr + page_up(length)
        if end < addr:
            raise SyscallError(errno.ENOMEM)
        if end == addr:
            return 0
        if flags & MS_SYNC:
            i, j = self._overlapping(addr, end)
            for v in self._vmas[i:j]:
                if v.shared and isinstance(v.backing, FileBacking):
                    os.fsync(v.backing.fd)
        if end > self.layout.task_top or self.layout.touches_stub(addr, end) or not self.is_mapped(addr, end):
            raise SyscallError(errno.ENOMEM)
        return 0

    def sys_mlock(self, addr: int, length: int) -> int:
        """``mlock``/``munlock``: every page is always resident here; only the range is checked."""
        end = page_up(addr + length)
        addr = page_down(addr)
        if end < addr:
            raise SyscallError(errno.EINVAL)
        if end == addr:
            return 0
        if end > self.layout.task_top or self.layout.touches_stub(addr, end) or not self.is_mapped(addr, end):
            raise SyscallError(errno.ENOMEM)
        return 0

    def sys_brk(self, addr: int) -> int:
        """``brk(2)``: returns the new break, or the old one when it cannot move."""
        if addr < self.brk_start:
            return self.brk
        old_top, new_top = page_up(self.brk), page_up(addr)
        if new_top < old_top:
            self.unmap(new_top, old_top)
        elif new_top > old_top:
            if not self.is_free(old_top, new_top) or new_top > self.layout.mmap_top:
                return self.brk
            prev = self.find(old_top - 1)
            near = None
            if prev is not None and prev.backing is self.physmem and prev.name == "[heap]":
                near = prev.offset + prev.length
            try:
                self.map_anon(old_top, new_top - old_top, PROT_READ | PROT_WRITE, name="[heap]", near=near)
            except SyscallError:
                return self.brk
        self.brk = addr
        return addr

    def sys_mremap(self, old: int, old_size: int, new_size: int, flags: int, new_addr: int = 0) -> int:
        """``mremap(2)``: shrink, grow in place, or move (pages are remapped, not copied)."""
        if flags & ~(MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP) or old & PAGE_MASK:
            raise SyscallError(errno.EINVAL)
        if flags & MREMAP_FIXED and not flags & MREMAP_MAYMOVE:
            raise SyscallError(errno.EINVAL)
        if flags & MREMAP_DONTUNMAP:
            raise SyscallError(errno.EINVAL)
        old_size, new_size = page_up(old_size), page_up(new_size)
        if new_size == 0 or old_size == 0:
            raise SyscallError(errno.EINVAL)
        old_end = old + old_size
        if old_end > self.layout.task_top or self.layout.touches_stub(old, old_end):
            raise SyscallError(errno.EFAULT)
        pieces = self._pieces_for_remap(old, old_end)
        if flags & MREMAP_FIXED:
            if new_addr & PAGE_MASK:
                raise SyscallError(errno.EINVAL)
            dst_end = new_addr + new_size
            if not self.layout.user_range_ok(new_addr, dst_end) or new_addr < self.layout.mmap_min:
                raise SyscallError(errno.EINVAL)
            if new_addr < old_end and old < dst_end:
                raise SyscallError(errno.EINVAL)
            self.unmap(new_addr, dst_end)
            return self._move(pieces, old, old_size, new_addr, new_size)
        if new_size <= old_size:
            self.unmap(old + new_size, old_end)
            return old
        if self.is_free(old_end, old + new_size):
            self._grow_tail(pieces[-1], old + new_size)
            return old
        if not flags & MREMAP_MAYMOVE:
            raise SyscallError(errno.ENOMEM)
        dst = self.find_gap(new_size)
        return self._move(pieces, old, old_size, dst, new_size)

    def _pieces_for_remap(self, start: int, end: int) -> list[Vma]:
        # Linux requires one VMA; ours may be several consecutive ones that Linux
        # would have merged (same protection and kind, different physmem ranges).
        i, j = self._overlapping(start, end)
        vs = self._vmas[i:j]
        if not vs or vs[0].start > start:
            raise SyscallError(errno.EFAULT)
        for a, b in itertools.pairwise(vs):
            if a.end != b.start or (a.prot, a.shared, a.name) != (b.prot, b.shared, b.name):
                raise SyscallError(errno.EFAULT)
        if vs[-1].end < end:
            raise SyscallError(errno.EFAULT)
        return [v.piece(max(v.start, start), min(v.end, end)) for v in vs]

    def _grow_tail(self, last: Vma, new_end: int) -> None:
        if last.backing is self.physmem:
            near: int | None = last.offset + last.length
        else:
            near = None
        self.map_anon(last.end, new_end - last.end, last.prot, shared=last.shared, name=last.name, near=near)

    def _move(self, pieces: list[Vma], old: int, old_size: int, dst: int, new_size: int) -> int:
        keep = min(old_size, new_size)
        moved: list[Vma] = []
        for v in pieces:
            if v.start >= old + keep:
                break
            part = v.piece(v.start, min(v.end, old + keep))
            moved.append(replace(part, start=dst + (part.start - old), end=dst + (part.end - old)))
        # Take the old range out of the list without releasing the pages that move.
        removed = self._cut(old, old + old_size)
        for v in moved:
            self._insert(v)
            self._queue_map(v)
        for v in removed:
            a, b = max(v.start, old + keep), v.end
            if b > a:
                v.backing.release(v.offset + (a - v.start), b - a)
            v.backing.drop()
        self.stub.munmap(old, old_size)
        if new_size > old_size:
            self._grow_tail(self.find(dst + old_size - 1) or moved[-1], dst + new_size)
        return dst

    # ----------------------------------------------------------- memory access

    def _spans(self, addr: int, n: int, need: int) -> Iterator[tuple[Vma, int, int]]:
        """``(vma, offset in backing, length)`` pieces covering ``[addr, addr + n)``."""
        if n < 0 or addr < 0 or addr + n > self.layout.task_top:
            raise GuestFault(addr, n)
        pos, end = addr, addr + n
        while pos < end:
            v = self.find(pos)
            if v is None or (v.prot & need) != need:
                raise GuestFault(pos, end - pos)
            take = min(v.end, end) - pos
            yield v, v.offset + (pos - v.start), take
            pos += take

    def views(self, addr: int, n: int, *, write: bool = False) -> list[memoryview]:
        """Zero-copy views of guest memory, for ``os.readv``/``os.writev``.

        ``write=True`` asks for memory the guest may write (the syscall stores into
        it); otherwise memory it may read.  Raises :class:`GuestFault`.
        """
        out: list[memoryview] = []
        for v, off, take in self._spans(addr, n, PROT_WRITE if write else PROT_READ):
            b = v.backing
            if write and not b.writable:
                raise GuestFault(addr, n)
            if off + take <= b.size:
                out.append(b.view[off : off + take])
            elif write:
                raise GuestFault(addr, n)  # past the end of a file: SIGBUS natively
            else:
                if off < b.size:
                    out.append(b.view[off:])
                out.append(memoryview(bytes(take - max(b.size - off, 0))))
        return out

    def usable_views(self, addr: int, n: int, *, write: bool = False) -> list[memoryview]:
        """Views of ``[addr, addr + n)`` up to its first page the guest may not use that way.

        What a Linux read or write copies before it faults (it then answers that
        count).  A range reaching past user space is refused whole (``access_ok``):
        no views.
        """
        try:
            return self.views(addr, n, write=write)
        except GuestFault as fault:
            good = fault.addr - addr
            if not 0 < good < n:
                return []
            try:
                return self.views(addr, good, write=write)
            except GuestFault:
                return []

    def read(self, addr: int, n: int) -> bytes:
        """Copy ``n`` bytes of guest memory the guest may read."""
        views = self.views(addr, n)
        if len(views) == 1:
            return bytes(views[0])
        return b"".join(views)

    def write(self, addr: int, data: bytes | bytearray | memoryview) -> None:
        """Store ``data`` into guest memory the guest may write."""
        pos = 0
        for view in self.views(addr, len(data), write=True):
            view[:] = data[pos : pos + len(view)]
            pos += len(view)

    def poke(self, addr: int, data: bytes | bytearray | memoryview) -> None:
        """Store into mapped physmem whatever its protection (the loader's own writes)."""
        pos = 0
        for v, off, take in self._spans(addr, len(data), PROT_NONE):
            if v.backing is not self.physmem:
                raise GuestFault(addr, len(data))
            self.physmem.view[off : off + take] = data[pos : pos + take]
            pos += take

    def read_cstr(self, addr: int, limit: int = 4096) -> bytes:
        """A NUL-terminated string (without the NUL).

        ``limit`` counts the NUL too (like ``PATH_MAX``): a longer string fails with
        ``ENAMETOOLONG``.
        """
        pos = addr
        out: list[bytes] = []
        total = 0
        while True:
            if pos < 0 or pos >= self.layout.task_top:
                raise GuestFault(pos)
            v = self.find(pos)
            if v is None or not v.prot & PROT_READ:
                raise GuestFault(pos)
            b = v.backing
            off = v.offset + (pos - v.start)
            stop = v.offset + v.length
            want = min(stop, off + (limit - total))
            nul = b.find_nul(off, want)
            if nul >= 0:
                out.append(bytes(b.view[off:nul]))
                return b"".join(out)
            if off < b.size and want > b.size:
                # Past the end of a file the mapping reads zeros: that ends the string.
                out.append(bytes(b.view[off : b.size]))
                return b"".join(out)
            if off >= b.size:
                return b"".join(out)
            chunk = bytes(b.view[off:want])
            out.append(chunk)
            total += len(chunk)
            if total >= limit:
                raise SyscallError(errno.ENAMETOOLONG)
            pos = v.end

    def read_u64(self, addr: int) -> int:
        """One little-endian 64-bit word."""
        return int(_U64.unpack(self.read(addr, 8))[0])

    def write_u64(self, addr: int, value: int) -> None:
        """Store one little-endian 64-bit word."""
        self.write(addr, _U64.pack(value & 0xFFFFFFFFFFFFFFFF))

    def write_i32(self, addr: int, value: int) -> None:
        """Store one little-endian 32-bit signed integer."""
        self.write(addr, _I32.pack(value))

    # ------------------------------------------------ stubs, fork and vfork

    def queue_all(self, stub: StubMapper) -> None:
        """Queue on ``stub`` one ``mmap`` record per mapping (a stub new to this space)."""
        for v in self._vmas:
            stub.mmap(v.start, v.length, v.prot, v.backing.fd, v.offset, shared=v.backing.stub_shared)

    def bind(self, stub: StubMapper) -> None:
        """Hand an address space built on :data:`NULL_MAPPER` to ``stub``: every
        mapping is queued on it, and later changes go to it."""
        self.stub = stub
        self._users = [stub]
        self.queue_all(stub)

    def fork_copy(self, stub: StubMapper) -> AddressSpace:
        """A copy of this address space for a forked child running in ``stub``.

        Private memory is copied into a new physmem file (the same offsets, only
        the pages that hold data); file-backed and shared anonymous mappings are
        shared, as ``fork`` shares them.  The child's mappings are queued on
        ``stub``.
        """
        child = AddressSpace(stub, self.layout, PhysMem(self.physmem.size))
        try:
            child.physmem.copy_from(self.physmem)
            for v in self._vmas:
                backing = child.physmem if v.backing is self.physmem else v.backing
                backing.acquire()
                child._vmas.append(replace(v, backing=backing))
            child.brk_start, child.brk = self.brk_start, self.brk
        except BaseException:
            child.close()
            raise
        child.queue_all(stub)
        return child

    def share(self, stub: StubMapper) -> None:
        """Let ``stub`` map this very address space too (``vfork``).

        Its mappings of physmem are ``MAP_SHARED`` mappings of the same file, so
        both stubs see the same memory; every change from now on is queued on
        every stub that shares the space, until :meth:`unshare`.
        """
        self.queue_all(stub)
        self._users.append(stub)
        self.stub = _Mirror(list(self._users), self.records)

    def unshare(self, stub: StubMapper) -> bool:
        """``stub`` no longer maps this space; True when no stub does (close it then)."""
        if stub in self._users:
            self._users.remove(stub)
        if len(self._users) == 1:
            self.stub = self._users[0]
        elif self._users:
            self.stub = _Mirror(list(self._users), self.records)
        return not self._users

    @property
    def records(self) -> int:
        """Records queued on the stubs that share this space (0 with only one stub)."""
        return self.stub.records if isinstance(self.stub, _Mirror) else 0

    # -------------------------------------------------------------- lifetime

    def clear(self) -> None:
        """Forget every mapping (for exec or exit); the stub records are the caller's."""
        pieces, self._vmas = self._vmas, []
        self._free(pieces)
        self.brk_start = self.brk = 0

    def close(self) -> None:
        """Release every backing, then the physmem file."""
        self.clear()
        self.physmem.close()


def _unmap(view: memoryview, mapping: mmap.mmap | None) -> None:
    view.release()
    if mapping is not None:
        # A view of it may still be alive somewhere (a traceback, a caller's slice):
        # then the mapping goes when the last one is released.
        with contextlib.suppress(BufferError):
            mapping.close()


class FileSource(Protocol):
    """An open guest file that can be mapped (see ``files.OpenFile.map_into``)."""

    def map_into(self, mm: AddressSpace, start: int, size: int, prot: int, shared: bool, offset: int) -> int: ...


def page_count(n: int) -> int:
    """Pages needed for ``n`` bytes."""
    return (n + PAGE_SIZE - 1) // PAGE_SIZE

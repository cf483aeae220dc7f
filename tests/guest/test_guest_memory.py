"""The guest address space against a fake stub: VMAs, queued records, guest memory access."""

from __future__ import annotations

import errno
import os

import pytest
from guest_fakes import FakeStub

from aioumm.guest.errors import GuestFault, SyscallError
from aioumm.guest.layout import PAGE_SIZE, default_layout
from aioumm.guest.memory import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_FIXED_NOREPLACE,
    MAP_PRIVATE,
    MAP_SHARED,
    MREMAP_MAYMOVE,
    PROT_EXEC,
    PROT_READ,
    PROT_WRITE,
    AddressSpace,
    FileBacking,
    PageAllocator,
)

P = PAGE_SIZE
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS


def _errno(exc: pytest.ExceptionInfo[SyscallError]) -> int:
    return exc.value.errno


def test_page_allocator_first_fit_split_and_coalesce() -> None:
    a = PageAllocator(16 * P)
    x = a.alloc(4 * P)
    y = a.alloc(4 * P)
    assert (x, y) == (0, 4 * P)
    a.free(x + P, 2 * P)  # part of an allocation can go on its own
    assert a.ranges() == [(P, 3 * P), (8 * P, 16 * P)]
    assert a.alloc(2 * P, at=P) == P
    assert a.alloc(P, at=P) is None
    a.free(P, 2 * P)
    a.free(0, P)
    a.free(3 * P, P)
    a.free(y, 4 * P)
    assert a.ranges() == [(0, 16 * P)]
    with pytest.raises(ValueError, match="double free"):
        a.free(0, P)
    assert a.alloc(32 * P) is None


def test_anonymous_mmap_goes_top_down_and_is_queued(mm: AddressSpace, fake_stub: FakeStub) -> None:
    layout = mm.layout
    a = mm.sys_mmap(0, 3 * P, RW, ANON)
    assert a == layout.mmap_top - 3 * P
    b = mm.sys_mmap(0, 10, RW, ANON)  # length rounds up to a page
    assert b == a - P
    ops = fake_stub.take()
    assert [op[:4] for op in ops] == [("mmap", a, 3 * P, RW), ("mmap", b, P, RW)]
    assert all(op[4] == mm.physmem.fd and op[6] is True for op in ops)  # shared physmem
    assert ops[0][5] != ops[1][5]  # different physmem pages


def test_hint_fixed_and_noreplace(mm: AddressSpace, fake_stub: FakeStub) -> None:
    hint = 0x20000000
    assert mm.sys_mmap(hint + 5, P, RW, ANON) == hint  # a free hint is used (page-aligned)
    mm.write(hint, b"old")
    assert mm.sys_mmap(hint, P, RW, ANON) != hint  # an occupied hint is not
    with pytest.raises(SyscallError) as exc:
        mm.sys_mmap(hint, P, RW, ANON | MAP_FIXED_NOREPLACE)
    assert _errno(exc) == errno.EEXIST
    assert mm.sys_mmap(hint, P, PROT_READ, ANON | MAP_FIXED) == hint  # replaces
    assert mm.read(hint, 3) == b"\0\0\0"
    with pytest.raises(SyscallError) as exc:
        mm.sys_mmap(hint + 1, P, RW, ANON | MAP_FIXED)
    assert _errno(exc) == errno.EINVAL


def test_mmap_refuses_the_stub_area_and_bad_arguments(mm: AddressSpace) -> None:
    stub = mm.layout.stub_start
    for flags in (MAP_FIXED, MAP_FIXED_NOREPLACE):
        with pytest.raises(SyscallError) as exc:
            mm.sys_mmap(stub, P, RW, ANON | flags)
        assert _errno(exc) == errno.ENOMEM
    assert not mm.layout.touches_stub(mm.sys_mmap(stub, P, RW, ANON), P)  # a hint there is ignored
    cases = [
        ((0, 0, RW, ANON), errno.EINVAL),  # length 0
        ((0, P, RW, MAP_ANONYMOUS), errno.EINVAL),  # neither shared nor private
        ((0, P, RW, MAP_ANONYMOUS | 0x03), errno.EINVAL),  # MAP_SHARED_VALIDATE is for files
        ((0, 1 << 62, RW, ANON), errno.ENOMEM),
        ((0x1000, P, RW, ANON | MAP_FIXED), errno.EPERM),  # below mmap_min_addr
    ]
    for args, err in cases:
        with pytest.raises(SyscallError) as exc:
            mm.sys_mmap(*args)
        assert _errno(exc) == err, args
    # Unknown prot bits are ignored by mmap, as on Linux (mprotect refuses them).
    assert mm.find(mm.sys_mmap(0, P, RW | 0x40 | 0x80000000, ANON)).prot == RW  # type: ignore[union-attr]


def test_partial_munmap_splits(mm: AddressSpace, fake_stub: FakeStub) -> None:
    a = mm.sys_mmap(0, 4 * P, RW, ANON)
    mm.write(a, b"A" * 4 * P)
    fake_stub.take()
    assert mm.sys_munmap(a + P, P) == 0
    assert fake_stub.take() == [("munmap", a + P, P)]
    spans = [(v.start, v.end) for v in mm.vmas]
    assert spans == [(a, a + P), (a + 2 * P, a + 4 * P)]
    assert mm.read(a + 2 * P, 2) == b"AA"
    with pytest.raises(GuestFault):
        mm.read(a + P, 1)
    with pytest.raises(GuestFault):
        mm.read(a, P + 1)  # runs into the hole
    assert mm.sys_munmap(a + P, P) == 0  # nothing there: fine, and nothing queued
    assert fake_stub.take() == []
    with pytest.raises(SyscallError) as exc:
        mm.sys_munmap(a + 1, P)
    assert _errno(exc) == errno.EINVAL


def test_freed_pages_come_back_zeroed(mm: AddressSpace) -> None:
    a = mm.sys_mmap(0, P, RW, ANON)
    mm.write(a, b"secret")
    off = mm.find(a).offset  # type: ignore[union-attr]
    mm.sys_munmap(a, P)
    b = mm.sys_mmap(0, P, RW, ANON)
    assert mm.find(b).offset == off  # type: ignore[union-attr]
    assert mm.read(b, 6) == bytes(6)


def test_mprotect_splits_and_checks(mm: AddressSpace, fake_stub: FakeStub) -> None:
    a = mm.sys_mmap(0, 4 * P, RW, ANON)
    fake_stub.take()
    assert mm.sys_mprotect(a + P, 2 * P, PROT_READ) == 0
    assert fake_stub.take() == [("mprotect", a + P, 2 * P, PROT_READ)]
    assert [(v.start - a, v.end - a, v.prot) for v in mm.vmas] == [
        (0, P, RW),
        (P, 3 * P, PROT_READ),
        (3 * P, 4 * P, RW),
    ]
    with pytest.raises(GuestFault):
        mm.write(a + P, b"x")  # no longer writable by the guest
    mm.write(a, b"x")
    assert mm.sys_mprotect(a + P, 2 * P, RW) == 0
    assert len(mm.vmas) == 1  # the pieces continue each other again: merged
    with pytest.raises(SyscallError) as exc:
        mm.sys_mprotect(a, 8 * P, PROT_READ)
    assert _errno(exc) == errno.ENOMEM  # not all mapped
    assert mm.sys_mprotect(a, 0, PROT_READ) == 0


def test_brk_grows_shrinks_and_fails_softly(mm: AddressSpace, fake_stub: FakeStub) -> None:
    mm.brk_start = mm.brk = 0x600000
    assert mm.sys_brk(0) == 0x600000
    assert mm.sys_brk(0x600000 + 100) == 0x600064
    assert fake_stub.take()[0][:3] == ("mmap", 0x600000, P)
    mm.write(0x600000, b"heap")
    assert mm.sys_brk(0x600000 + 5 * P) == 0x600000 + 5 * P  # byte-granular break
    assert len(mm.vmas) == 1  # grown contiguously in physmem: one mapping
    assert mm.sys_brk(0x600000 + 10) == 0x60000A
    assert fake_stub.take()[-1] == ("munmap", 0x600000 + P, 5 * P - P)
    assert mm.read(0x600000, 4) == b"heap"
    mm.sys_mmap(0x600000 + 2 * P, P, RW, ANON | MAP_FIXED)  # something in the way
    assert mm.sys_brk(0x600000 + 4 * P) == 0x60000A  # failure returns the current break
    assert mm.sys_brk(0x100) == 0x60000A  # below the start: just a query


def test_mremap_grow_in_place_move_and_shrink(mm: AddressSpace, fake_stub: FakeStub) -> None:
    a = mm.sys_mmap(0x30000000, 2 * P, RW, ANON)
    mm.write(a, b"1" * P + b"2" * P)
    assert mm.sys_mremap(a, 2 * P, 4 * P, 0) == a  # room after it: grows in place
    assert mm.read(a + P, 1) == b"2" and mm.read(a + 3 * P, 1) == b"\0"
    mm.sys_mmap(a + 4 * P, P, RW, ANON | MAP_FIXED)  # now blocked
    with pytest.raises(SyscallError) as exc:
        mm.sys_mremap(a, 4 * P, 8 * P, 0)
    assert _errno(exc) == errno.ENOMEM
    fake_stub.take()
    b = mm.sys_mremap(a, 4 * P, 8 * P, MREMAP_MAYMOVE)
    assert b != a
    assert mm.read(b, 1) == b"1" and mm.read(b + P, 1) == b"2" and mm.read(b + 7 * P, 1) == b"\0"
    with pytest.raises(GuestFault):
        mm.read(a, 1)
    ops = fake_stub.take()
    # Moved by mapping the same physmem pages at the new place: nothing is copied.
    assert ("munmap", a, 4 * P) in ops
    assert any(op[0] == "mmap" and op[1] == b for op in ops)
    assert mm.sys_mremap(b, 8 * P, P, 0) == b
    with pytest.raises(GuestFault):
        mm.read(b + P, 1)
    with pytest.raises(SyscallError) as exc:
        mm.sys_mremap(0x50000000, P, 2 * P, MREMAP_MAYMOVE)
    assert _errno(exc) == errno.EFAULT


def test_madvise_dontneed_zeroes(mm: AddressSpace) -> None:
    a = mm.sys_mmap(0, 2 * P, RW, ANON)
    mm.write(a, b"z" * 2 * P)
    assert mm.sys_madvise(a, P, 4) == 0
    assert mm.read(a, 1) == b"\0" and mm.read(a + P, 1) == b"z"


def test_access_helpers(mm: AddressSpace) -> None:
    a = mm.sys_mmap(0x40000000, P, RW, ANON)
    b = mm.sys_mmap(0x40000000 + P, P, PROT_READ, ANON | MAP_FIXED)
    mm.write(a + P - 3, b"abc")
    mm.poke(b, b"def\0")  # the loader may store into read-only memory
    assert mm.read(a + P - 3, 7) == b"abcdef\0"  # across two mappings
    assert mm.read_cstr(a + P - 3) == b"abcdef"
    views = mm.views(a + P - 3, 6)
    assert [bytes(v) for v in views] == [b"abc", b"def"]
    del views  # views pin the controller's mapping; the traceback below would keep them
    with pytest.raises(GuestFault):
        mm.write(b, b"x")
    with pytest.raises(GuestFault):
        mm.read(0, 1)
    with pytest.raises(GuestFault):
        mm.read((1 << 64) - 1, 2)
    mm.poke(b + P - 1, b"x")
    with pytest.raises(GuestFault):
        mm.read_cstr(b + P - 1)  # no NUL before the end of the mapping
    mm.poke(a, b"x" * 100)
    with pytest.raises(SyscallError) as exc:
        mm.read_cstr(a, 50)
    assert _errno(exc) == errno.ENAMETOOLONG
    mm.write_u64(a, 0x1122334455667788)
    assert mm.read_u64(a) == 0x1122334455667788


def test_file_backed_mapping_privatized_on_write(mm: AddressSpace, fake_stub: FakeStub, tmp_path: object) -> None:
    path = f"{tmp_path}/f"
    with open(path, "wb") as f:
        f.write(b"F" * P + b"G" * 100)
    fd = os.open(path, os.O_RDONLY)
    try:
        backing = FileBacking(fd)
        backing.acquire()
        mm.map_backing(0x50000000, 2 * P, PROT_READ | PROT_EXEC, backing, 0, name=path)
        backing.drop()
    finally:
        os.close(fd)
    op = fake_stub.take()[0]
    assert op[0] == "mmap" and op[6] is False and op[4] == backing.fd  # the file itself, private
    assert mm.read(0x50000000 + P - 1, 3) == b"FGG"
    assert mm.read(0x50000000 + P + 100, 4) == bytes(4)  # past EOF in the last page
    assert mm.read_cstr(0x50000000 + P) == b"G" * 100
    mm.sys_mprotect(0x50000000 + P, P, RW)
    ops = fake_stub.take()
    assert ops[0][:4] == ("mmap", 0x50000000 + P, P, RW) and ops[0][4] == mm.physmem.fd
    mm.write(0x50000000 + P, b"H")
    assert mm.read(0x50000000 + P - 1, 3) == b"FHG"
    mm.sys_munmap(0x50000000, 2 * P)
    assert backing.fd == -1  # the last mapping of the file went: closed


def test_shared_file_mapping_rejects_write_on_readonly_fd(mm: AddressSpace, tmp_path: object) -> None:
    from aioumm.guest.files import OpenFile

    path = f"{tmp_path}/g"
    with open(path, "wb") as f:
        f.write(b"x" * P)
    ro = OpenFile(os.open(path, os.O_RDONLY | os.O_CLOEXEC), path, flags=os.O_RDONLY)
    rw = OpenFile(os.open(path, os.O_RDWR | os.O_CLOEXEC), path, flags=os.O_RDWR)
    try:
        with pytest.raises(SyscallError) as exc:
            mm.sys_mmap(0, P, RW, MAP_SHARED, ro, 0)
        assert _errno(exc) == errno.EACCES
        a = mm.sys_mmap(0, P, RW, MAP_SHARED, rw, 0)
        mm.write(a, b"shared")
        with open(path, "rb") as f:
            assert f.read(6) == b"shared"  # the controller wrote the file's own pages
        c = mm.sys_mmap(0, P, RW, MAP_PRIVATE, ro, 0)
        mm.write(c, b"private")
        with open(path, "rb") as f:
            assert f.read(7) == b"sharedx"
    finally:
        ro.close()
        rw.close()


def test_layout_keeps_stack_below_the_stub() -> None:
    layout = default_layout()
    assert layout.stack_top < layout.stub_start
    assert not layout.touches_stub(layout.stack_bottom, layout.stack_top + PAGE_SIZE)
    assert layout.mmap_top < layout.stack_bottom

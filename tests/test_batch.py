"""Batches: merge rules, the FD map limit, failures mid-batch, files mapped through passed descriptors."""

from __future__ import annotations

import errno
import os
import resource
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from guestcode import Guest

from aioumm import abi
from aioumm.abi import Op, lib
from aioumm.batch import FULL_BATCH, Batch
from aioumm.errors import BadArgument, BatchError, FdPassingError
from aioumm.loop import Controller

PAGE = abi.PAGE_SIZE


@pytest.fixture
def memfds() -> Iterator[list[int]]:
    fds = [os.memfd_create(f"m{i}", os.MFD_CLOEXEC) for i in range(12)]
    for i, fd in enumerate(fds):
        os.ftruncate(fd, 4 * PAGE)
        os.pwrite(fd, (0x1111 * (i + 1)).to_bytes(8, "little"), 0)
    yield fds
    for fd in fds:
        os.close(fd)


@pytest_asyncio.fixture
async def ctl() -> AsyncIterator[Controller]:
    async with Controller() as ctl:
        yield ctl


def test_contiguous_records_of_one_descriptor_merge(memfds: list[int]) -> None:
    b = Batch()
    b.add(Op.MMAP, 0x10000, PAGE, 3, memfds[0], 0)
    b.add(Op.MMAP, 0x11000, PAGE, 3, memfds[0], PAGE)
    assert len(b) == 1 and b.record(0).length == 2 * PAGE and b.record(0).calls == 2
    b.close()


def test_no_merge_across_descriptors_even_in_the_same_slot_position(memfds: list[int]) -> None:
    # Two batches both put their first descriptor in slot 0; only the descriptor decides.
    b = Batch()
    b.add(Op.MMAP, 0x10000, PAGE, 3, memfds[0], 0)
    b.add(Op.MMAP, 0x11000, PAGE, 3, memfds[1], PAGE)
    assert len(b) == 2
    assert [b.record(i).slot for i in range(2)] == [0, 1]
    b.close()


def test_no_merge_on_gap_offset_prot_or_sharing(memfds: list[int]) -> None:
    fd = memfds[0]
    b = Batch()
    b.add(Op.MMAP, 0x10000, PAGE, 3, fd, 0)
    b.add(Op.MMAP, 0x12000, PAGE, 3, fd, 2 * PAGE)  # address gap
    b.add(Op.MMAP, 0x13000, PAGE, 3, fd, 0)  # offset not contiguous
    b.add(Op.MMAP, 0x14000, PAGE, 1, fd, PAGE)  # other protection
    b.add(Op.MMAP, 0x15000, PAGE, 1, fd, 2 * PAGE, shared=False)  # other sharing
    assert len(b) == 5
    assert {b.record(i).slot for i in range(5)} == {0}  # one descriptor, one slot
    b.close()


def test_anonymous_munmap_and_mprotect_merge() -> None:
    b = Batch()
    b.add(Op.MMAP, 0x10000, PAGE, 3)
    b.add(Op.MMAP, 0x11000, PAGE, 3)
    b.add(Op.MUNMAP, 0x20000, PAGE)
    b.add(Op.MUNMAP, 0x21000, PAGE)
    b.add(Op.MPROTECT, 0x30000, PAGE, 1)
    b.add(Op.MPROTECT, 0x31000, PAGE, 1)
    b.add(Op.MPROTECT, 0x32000, PAGE, 3)
    assert [(b.record(i).op, b.record(i).length) for i in range(len(b))] == [
        (Op.MMAP, 2 * PAGE),
        (Op.MUNMAP, 2 * PAGE),
        (Op.MPROTECT, 2 * PAGE),
        (Op.MPROTECT, PAGE),
    ]


def test_fd_map_is_bounded(memfds: list[int]) -> None:
    b = Batch()
    for i in range(abi.MAX_FDS):
        assert b.add(Op.MMAP, 0x10000 + 2 * i * PAGE, PAGE, 3, memfds[i], 0)
    assert b.add(Op.MMAP, 0x40000, PAGE, 3, memfds[0], 0)  # reuses its slot
    assert not b.add(Op.MMAP, 0x50000, PAGE, 3, memfds[abi.MAX_FDS], 0)
    assert len(b) == abi.MAX_FDS + 1 and len(b.dups) == abi.MAX_FDS
    assert b.add(Op.MMAP, 0x60000, PAGE, 3)
    b.close()


def test_a_reused_descriptor_number_is_another_descriptor(memfds: list[int]) -> None:
    b = Batch()
    fd = os.dup(memfds[0])
    b.add(Op.MMAP, 0x10000, PAGE, 3, fd, 0)
    os.close(fd)
    assert os.dup2(memfds[1], fd) == fd  # same number, another file
    b.add(Op.MMAP, 0x11000, PAGE, 3, fd, PAGE)
    assert len(b) == 2  # no merge: another file
    assert [b.record(i).slot for i in range(2)] == [0, 1]
    assert os.fstat(b.dups[1]).st_ino == os.fstat(memfds[1]).st_ino
    os.close(fd)
    b.close()


def test_a_file_mapping_never_merges_into_an_anonymous_one(memfds: list[int]) -> None:
    # A descriptor not in the map yet has no slot; that must not read as "anonymous, like the last".
    b = Batch()
    b.add(Op.MMAP, 0x10000, PAGE, 3)
    b.add(Op.MMAP, 0x11000, PAGE, 3, memfds[0], PAGE)
    assert len(b) == 2
    assert (b.record(0).fd, b.record(1).fd, b.record(1).slot, b.record(1).offset) == (-1, memfds[0], 0, PAGE)
    b.close()


@pytest.fixture(params=["F_DUPFD_QUERY", "kcmp"])
def same_file_check(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each way a batch tells whether a number still names its file (kcmp: kernels before 6.10)."""
    saved = lib.aioumm_no_dupfd_query
    lib.aioumm_no_dupfd_query = int(request.param == "kcmp")
    yield request.param
    lib.aioumm_no_dupfd_query = saved


def test_a_reused_number_is_told_apart_by_either_check(memfds: list[int], same_file_check: str) -> None:
    b = Batch()
    fd = os.dup(memfds[0])
    b.add(Op.MMAP, 0x10000, PAGE, 3, fd, 0)
    b.add(Op.MMAP, 0x11000, PAGE, 3, fd, PAGE)  # still the same file: merged, same slot
    os.dup2(memfds[1], fd)
    b.add(Op.MMAP, 0x12000, PAGE, 3, fd, 2 * PAGE)
    assert [(b.record(i).slot, b.record(i).calls) for i in range(len(b))] == [(0, 2), (1, 1)]
    os.close(fd)
    with pytest.raises(OSError) as info:
        b.add(Op.MMAP, 0x13000, PAGE, 3, fd, 3 * PAGE)
    assert info.value.errno == errno.EBADF and len(b) == 2
    b.close()


def test_closing_a_batch_closes_exactly_its_duplicates(memfds: list[int]) -> None:
    before = set(os.listdir("/proc/self/fd"))
    b = Batch()
    for i in range(3 * abi.MAX_FDS):  # the same descriptors, again and again: one dup each
        assert b.add(Op.MMAP, 0x10000 + 2 * i * PAGE, PAGE, 3, memfds[i % abi.MAX_FDS], 0)
    assert len(b.dups) == abi.MAX_FDS
    assert len(set(os.listdir("/proc/self/fd")) - before) == abi.MAX_FDS
    b.close()
    b.close()
    assert set(os.listdir("/proc/self/fd")) == before


def test_batch_holds_its_own_duplicates(memfds: list[int]) -> None:
    fd = os.dup(memfds[0])
    b = Batch()
    b.add(Op.MMAP, 0x10000, PAGE, 3, fd, 0)
    os.close(fd)  # the caller lets go before the flush
    assert os.fstat(b.dups[0]).st_ino == os.fstat(memfds[0]).st_ino
    b.close()


SUM_PAGES = """
    xor %eax, %eax
    mov $0x10000000, %rsi
    mov %rdi, %rcx
1:  add (%rsi), %rax
    add $0x2000, %rsi
    loop 1b
    mov %rax, %r12
    mov $500, %eax
    syscall
    ud2
"""


@pytest.mark.asyncio
async def test_more_descriptors_than_the_fd_map_in_one_logical_batch(ctl: Controller, memfds: list[int]) -> None:
    stub = await ctl.spawn()
    g = Guest(stub, SUM_PAGES)
    flushes, passed = ctl.stats.flushes, ctl.stats.fds_passed
    n = 10  # > STUB_MAX_FDS: the batch splits by itself
    for i in range(n):
        stub.mmap(0x10000000 + 2 * i * PAGE, PAGE, 1, memfds[i], 0)
    stub.regs.rdi = n
    await stub.resume()
    assert stub.regs.r12 == sum(0x1111 * (i + 1) for i in range(n))
    assert ctl.stats.fds_passed - passed == n + 1  # plus the guest's own memfd
    assert ctl.stats.flushes - flushes >= 3
    g.close()


@pytest.mark.asyncio
async def test_more_records_than_the_batch_capacity(ctl: Controller) -> None:
    stub = await ctl.spawn()
    g = Guest(stub, SUM_PAGES)
    n = abi.BATCH_CAPACITY + 50
    for i in range(n):  # every other page: nothing merges
        stub.mmap(0x10000000 + 2 * i * PAGE, PAGE, 3)
    assert stub.queued > abi.BATCH_CAPACITY
    await stub.flush()
    with open(f"/proc/{stub.pid}/maps") as f:
        anon = [line for line in f if line.startswith("1")]
    assert len(anon) == n
    g.close()


@pytest.mark.asyncio
async def test_a_failing_record_mid_batch(ctl: Controller, memfds: list[int]) -> None:
    stub = await ctl.spawn()
    g = Guest(stub, SUM_PAGES)
    await stub.flush()
    base = 0x10000000
    stub.mmap(base, PAGE, 1, memfds[0], 0)
    stub.mmap(base + 2 * PAGE, PAGE, 1, memfds[1], 0)
    stub.mmap(base + 4 * PAGE, PAGE, 1, memfds[2], 0)
    stub.mprotect(0x70000000, PAGE, 1)  # nothing mapped there: ENOMEM
    stub.mmap(base + 6 * PAGE, PAGE, 1, memfds[3], 0)
    with pytest.raises(BatchError) as info:
        await stub.flush()
    err = info.value
    assert (err.op, err.errno, err.done) == ("mprotect", errno.ENOMEM, 3)
    assert err.args_ == {"addr": 0x70000000, "length": PAGE, "prot": 1}
    assert "mprotect(addr=0x70000000" in str(err) and "ENOMEM" in str(err) and "3 earlier" in str(err)
    # The three records before it ran, the one after it did not, and the stub is still usable.
    stub.regs.rdi = 3
    await stub.resume()
    assert stub.regs.r12 == 0x1111 + 0x2222 + 0x3333
    with open(f"/proc/{stub.pid}/maps") as f:
        assert f"{base + 6 * PAGE:x}" not in f.read()
    g.close()


@pytest.mark.asyncio
async def test_a_file_mapped_through_a_passed_descriptor(ctl: Controller, tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(b"FILEBYTE" + bytes(PAGE - 8))
    stub = await ctl.spawn()
    g = Guest(stub, "movabs $0x20000000, %rsi\nmov (%rsi), %r12\nmov $500, %eax\nsyscall\nud2")
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    stub.mmap(0x20000000, PAGE, 1, fd, 0, shared=False)
    passed = ctl.stats.fds_passed
    await stub.resume()
    assert stub.regs.r12.to_bytes(8, "little") == b"FILEBYTE"
    assert ctl.stats.fds_passed > passed
    # The controller keeps its descriptor; the stub closed its copy after the batch.
    os.fstat(fd)
    assert sorted(os.listdir(f"/proc/{stub.pid}/fd")) == ["0", "1"]
    os.close(fd)
    g.close()


@pytest.mark.asyncio
async def test_truncated_control_message_fails_the_batch_cleanly(ctl: Controller, memfds: list[int]) -> None:
    stub = await ctl.spawn()
    # The stub holds fds 0 and 1; with a limit of 3 it can take one descriptor, not two.
    resource.prlimit(stub.pid, resource.RLIMIT_NOFILE, (3, 3))
    stub.mmap(0x10000000, PAGE, 1, memfds[0], 0)
    stub.mmap(0x10002000, PAGE, 1, memfds[1], 0)
    with pytest.raises(FdPassingError, match="did not receive exactly the 2"):
        await stub.flush()
    # Nothing was mapped, nothing is left open in the stub, and it still works.
    with open(f"/proc/{stub.pid}/maps") as f:
        assert "1000" not in f.read().split("7e00")[0]
    assert sorted(os.listdir(f"/proc/{stub.pid}/fd")) == ["0", "1"]
    stub.mmap(0x10000000, PAGE, 1, memfds[0], 0)
    await stub.flush()


@pytest.mark.asyncio
async def test_a_reused_descriptor_number_maps_the_file_it_names_now(ctl: Controller, memfds: list[int]) -> None:
    stub = await ctl.spawn()
    g = Guest(stub, SUM_PAGES)
    fd = os.dup(memfds[0])
    stub.mmap(0x10000000, PAGE, 1, fd, 0)
    os.close(fd)
    os.dup2(memfds[1], fd)
    stub.mmap(0x10002000, PAGE, 1, fd, 0)
    os.close(fd)
    stub.regs.rdi = 2
    await stub.resume()
    assert stub.regs.r12 == 0x1111 + 0x2222
    g.close()


@pytest.mark.asyncio
async def test_a_queued_descriptor_closed_since_is_refused_by_name(ctl: Controller, memfds: list[int]) -> None:
    stub = await ctl.spawn()
    g = Guest(stub, SUM_PAGES)
    fd = os.dup(memfds[0])
    stub.mmap(0x10000000, PAGE, 1, fd, 0)
    queued = stub.queued
    os.close(fd)
    with pytest.raises(BadArgument, match=r"mmap: fd: .*closed"):
        stub.mmap(0x10002000, PAGE, 1, fd, 0)
    assert stub.queued == queued
    stub.regs.rdi = 1
    await stub.resume()  # what was queued before still maps the file it named
    assert stub.regs.r12 == 0x1111
    g.close()


@pytest.mark.asyncio
async def test_a_stale_descriptor_message_is_skipped(ctl: Controller, memfds: list[int]) -> None:
    """A message sent for a batch that never ran must not be taken for the next batch's."""
    stub = await ctl.spawn()
    g = Guest(stub, SUM_PAGES)
    await stub.flush()
    # What a controller failing between its send and its hand-over leaves behind:
    for seq in (7, 8):
        await stub._channel.send_fds([memfds[0]], seq)
    stub.mmap(0x10000000, PAGE, 1, memfds[1], 0)
    stub.regs.rdi = 1
    await stub.resume()
    assert stub.regs.r12 == 0x2222  # memfd 1, not the stale memfd 0
    assert sorted(os.listdir(f"/proc/{stub.pid}/fd")) == ["0", "1"]  # stale copies closed
    g.close()


@pytest.mark.asyncio
async def test_an_idle_stub_holds_no_batch_and_the_full_sentinel_never_changes(
    ctl: Controller, memfds: list[int]
) -> None:
    """Nothing queued: no native batch (about 11 KiB each); the shared sentinel stays as made."""
    sentinel = bytes(abi.ffi.buffer(FULL_BATCH))
    stubs = [await ctl.spawn() for _ in range(3)]
    for stub in stubs:
        assert stub._batches == [] and stub.queued == 0
        # Every kind of record, a refused one and a closed descriptor too, on the sentinel's path.
        stub.mmap(0x400000, PAGE, 3, memfds[0], 0)
        stub.mmap(0x401000, PAGE, 3, memfds[0], PAGE)  # merges with the first
        stub.munmap(0x500000, PAGE)
        stub.mprotect(0x400000, PAGE, 1)
        assert stub.queued == 3
        await stub.flush()
        assert stub._batches == [] and stub.queued == 0
        with pytest.raises(BadArgument):
            stub.mmap(0x400001, PAGE, 3)
        closed = os.dup(memfds[1])
        os.close(closed)
        with pytest.raises(BadArgument, match="fd"):
            stub.mmap(0x400000, PAGE, 3, closed, 0)
        assert stub._batches == []  # a refused first record leaves no empty batch behind
    assert bytes(abi.ffi.buffer(FULL_BATCH)) == sentinel


def test_a_closed_batch_gives_its_struct_back_and_lets_go_of_it(memfds: list[int]) -> None:
    b = Batch()
    native = b.native
    assert b.add(Op.MMAP, 0x10000, PAGE, 3, memfds[0], 0)
    b.close()
    assert b.native is None and len(b) == 0
    again = Batch()
    assert again.native == native and len(again) == 0 and again.dups == []  # reused, empty
    again.close()

"""Batches: the queued mmap/munmap/mprotect records for one stub, with their FD map.

The rules (seed kernel patch, design §5):

* a record names a *slot* of the batch's FD map, not a descriptor; the same
  descriptor reuses its slot, and a map holds at most ``MAX_FDS``;
* two mmap records merge when they are contiguous in address and offset,
  have the same protection and sharing, and name the same **descriptor** -
  the slot alone is not enough, because slot numbers restart with every
  batch;
* when the records or the FD map are full the batch is closed and a new one
  opened; the stub runs them in order at the next flush, so the caller never
  sees the limit.

Records are packed into their wire format (``struct stub_record``) as they
are queued, so a flush copies one buffer into the stub data page.

A batch takes its own duplicate of a descriptor when the descriptor first
enters its FD map and keeps it until the batch has run: the file the stub
maps is the one the caller named, even if the caller closes that
descriptor before the flush, or closes it and reuses the number for
another file (a number matches its slot only while it still names the
slot's file).
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from dataclasses import dataclass

from aioumm.abi import BATCH_CAPACITY, MAX_FDS, SLOT_ANON, Op, ffi, lib

#: ``struct stub_record``: op, fd_slot, prot, flags, addr, length, offset.
RECORD = struct.Struct("<IiIIQQQ")
_LENGTH = struct.Struct("<Q")
_LENGTH_OFFSET = 24
if RECORD.size != ffi.sizeof("struct stub_record") or [
    ffi.offsetof("struct stub_record", f) for f in ("op", "fd_slot", "prot", "flags", "addr", "length", "offset")
] != [0, 4, 8, 12, 16, _LENGTH_OFFSET, 32]:
    raise ImportError("struct stub_record in stub_abi.h no longer matches aioumm.batch.RECORD")

_SHARED = lib.STUB_MAP_SHARED
_PRIVATE = lib.STUB_MAP_PRIVATE


@dataclass(frozen=True, slots=True)
class Record:
    """One queued record, decoded (``fd`` is the caller's descriptor, -1 for none)."""

    op: Op
    addr: int
    length: int
    prot: int
    fd: int
    offset: int
    shared: bool
    slot: int
    calls: int

    def describe(self) -> tuple[str, dict[str, int]]:
        """The operation's name and arguments, for error messages."""
        if self.op == Op.MMAP:
            return "mmap", {
                "addr": self.addr,
                "length": self.length,
                "prot": self.prot,
                "fd": self.fd,
                "offset": self.offset,
            }
        if self.op == Op.MPROTECT:
            return "mprotect", {"addr": self.addr, "length": self.length, "prot": self.prot}
        return "munmap", {"addr": self.addr, "length": self.length}


class Batch:
    """Up to ``BATCH_CAPACITY`` records and up to ``MAX_FDS`` descriptors."""

    __slots__ = ("_last", "buf", "calls", "dups", "fds")

    def __init__(self) -> None:
        self.buf = bytearray()  # the packed records, as the stub reads them
        self.calls: list[int] = []  # queued calls merged into each record
        self.fds: list[int] = []  # the caller's descriptor numbers, by slot
        self.dups: list[int] = []  # our duplicates of them, by slot: what is sent
        # The last record, unpacked, for merging: op, addr, length, prot, slot, offset, shared.
        self._last: list[int] | None = None

    def __len__(self) -> int:
        return len(self.calls)

    def _find(self, fd: int) -> int:
        """The slot already holding ``fd``, or -1.

        A slot matches only while the caller's descriptor still names the
        file the slot's duplicate was taken from (one ``kcmp``), so a number
        the caller closed and reused for another file gets a slot of its
        own.  Raises OSError(EBADF) for a closed or invalid descriptor.
        """
        for slot, known in enumerate(self.fds):
            if known == fd:
                same = lib.aioumm_same_file(fd, self.dups[slot])
                if same < 0:
                    if same == -errno.EBADF:
                        raise OSError(errno.EBADF, os.strerror(errno.EBADF))
                    same = os.fstat(fd).st_ino == os.fstat(self.dups[slot]).st_ino  # no kcmp: the inode decides
                if same:
                    return slot
        return -1

    def add(
        self, op: Op, addr: int, length: int, prot: int = 0, fd: int = -1, offset: int = 0, shared: bool = True
    ) -> bool:
        """Queue a record, merged into the previous one when the rules allow.

        Returns False, queueing nothing, when the batch has no room for it
        (records or FD map full).  Raises OSError for a bad descriptor.
        """
        slot = self._find(fd) if op == Op.MMAP and fd >= 0 else SLOT_ANON
        last = self._last
        # A descriptor not in the map yet (slot -1, as SLOT_ANON) merges with nothing.
        fresh = slot < 0 and fd >= 0 and op == Op.MMAP
        if last is not None and not fresh and last[0] == op and last[1] + last[2] == addr and slot == last[4]:
            if op == Op.MMAP:
                # Same slot means the same descriptor *and* file (SLOT_ANON: both anonymous).
                mergeable = last[3] == prot and last[6] == shared and (fd < 0 or last[5] + last[2] == offset)
            else:
                mergeable = op == Op.MUNMAP or last[3] == prot
            if mergeable:
                last[2] += length
                _LENGTH.pack_into(self.buf, len(self.buf) - RECORD.size + _LENGTH_OFFSET, last[2])
                self.calls[-1] += 1
                return True
        if len(self.calls) >= BATCH_CAPACITY:
            return False
        if op == Op.MMAP and fd >= 0 and slot < 0:
            if len(self.fds) >= MAX_FDS:
                return False
            self.dups.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3))
            self.fds.append(fd)
            slot = len(self.fds) - 1
        self.buf += RECORD.pack(op, slot, prot, _SHARED if shared else _PRIVATE, addr, length, offset)
        self.calls.append(1)
        self._last = [op, addr, length, prot, slot, offset, shared]
        return True

    def record(self, index: int) -> Record:
        """The record at ``index``, decoded."""
        op, slot, prot, flags, addr, length, offset = RECORD.unpack_from(self.buf, index * RECORD.size)
        fd = self.fds[slot] if 0 <= slot < len(self.fds) else -1
        return Record(Op(op), addr, length, prot, fd, offset, flags == _SHARED, slot, self.calls[index])

    def close(self) -> None:
        """Close the batch's descriptor duplicates; safe to call twice."""
        dups, self.dups = self.dups, []
        for fd in dups:
            os.close(fd)

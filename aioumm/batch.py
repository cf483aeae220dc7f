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

A batch holds its own duplicate of every descriptor in its map from the
moment it is queued until the batch has run: the file the stub maps is the
one the caller named, even if the caller closes or reuses that number
before the flush.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass

from aioumm.abi import BATCH_CAPACITY, MAX_FDS, SLOT_ANON, Op


@dataclass(slots=True)
class Record:
    """One queued operation (``fd`` is the caller's descriptor, -1 for anonymous memory)."""

    op: Op
    addr: int
    length: int
    prot: int = 0
    fd: int = -1
    offset: int = 0
    shared: bool = True
    slot: int = SLOT_ANON
    calls: int = 1

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

    __slots__ = ("dups", "fds", "records")

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.fds: list[int] = []  # the caller's descriptor numbers, by slot
        self.dups: list[int] = []  # our duplicates of them, by slot: what is sent

    def __len__(self) -> int:
        return len(self.records)

    def has_room(self, fd: int = -1) -> bool:
        """Whether one more record (naming ``fd``) fits, counting a possible merge as a record."""
        if len(self.records) >= BATCH_CAPACITY:
            return False
        return fd < 0 or fd in self.fds or len(self.fds) < MAX_FDS

    def _slot(self, fd: int) -> int:
        if fd < 0:
            return SLOT_ANON
        try:
            return self.fds.index(fd)
        except ValueError:
            pass
        # Raises OSError(EBADF) for a closed or invalid descriptor: the caller turns it into BadArgument.
        dup = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
        self.fds.append(fd)
        self.dups.append(dup)
        return len(self.fds) - 1

    def add(self, rec: Record) -> None:
        """Queue ``rec`` (the caller checked ``has_room``), merging it into the previous record if it can."""
        if self.records and _merge(self.records[-1], rec):
            return
        rec.slot = self._slot(rec.fd) if rec.op == Op.MMAP else SLOT_ANON
        self.records.append(rec)

    def close(self) -> None:
        """Close the batch's descriptor duplicates; safe to call twice."""
        dups, self.dups = self.dups, []
        for fd in dups:
            os.close(fd)


def _merge(prev: Record, rec: Record) -> bool:
    if prev.op != rec.op or prev.addr + prev.length != rec.addr:
        return False
    if rec.op == Op.MMAP:
        if prev.prot != rec.prot or prev.shared != rec.shared or prev.fd != rec.fd:
            return False
        if rec.fd >= 0 and prev.offset + prev.length != rec.offset:
            return False
    elif rec.op == Op.MPROTECT and prev.prot != rec.prot:
        return False
    prev.length += rec.length
    prev.calls += rec.calls
    return True

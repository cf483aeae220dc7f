"""Batches: the queued mmap/munmap/mprotect records for one stub, with their FD map.

The rules:

* a record names a *slot* of the batch's FD map, not a descriptor; the same
  descriptor reuses its slot, and a map holds at most ``MAX_FDS``;
* two mmap records merge when they are contiguous in address and offset,
  have the same protection and sharing, and name the same **descriptor** -
  the slot alone is not enough, because slot numbers restart with every
  batch;
* when the records or the FD map are full the batch is closed and a new one
  opened; the stub runs them in order at the next flush, so the caller never
  sees the limit.

The records, their call counts and the FD map live in one native
``struct aioumm_batch`` (``_native.c``), and ``aioumm_batch_add`` queues a
record in one call: the slot lookup, the merge and the packing into the
wire format (``struct stub_record`` of ``stub_abi.h``) cost a few hundred
nanoseconds there, against several microseconds as Python objects, and a
flush copies the records into the stub data page in one call
(``aioumm_batch_load``).

A batch takes its own duplicate of a descriptor when the descriptor first
enters its FD map and keeps it until the batch has run: the file the stub
maps is the one the caller named, even if the caller closes that
descriptor before the flush, or closes it and reuses the number for
another file (a number matches its slot only while it still names the
slot's file: one ``F_DUPFD_QUERY``, or ``kcmp`` on kernels before 6.10,
per record that names a descriptor already in the map).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from aioumm.abi import Op, ffi, lib

_SHARED = lib.STUB_MAP_SHARED
_PRIVATE = lib.STUB_MAP_PRIVATE
_QUEUED: int = lib.AIOUMM_BATCH_QUEUED
_REFUSED: int = lib.AIOUMM_BATCH_REFUSED


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


# A native batch is about 11 KiB: the structs of closed batches are kept for the next ones
# (of any stub), so that an idle stub holds none and a flush allocates and zeroes none.
_POOL: list[Any] = []
_POOL_MAX = 16


def _full_batch() -> Any:
    """A native batch that refuses every record as full and can never change.

    A stub with nothing queued points its hot path at it: the first record then takes the
    slow path, which opens a real batch.  Every record is op 0, which no operation has, so
    nothing can merge into the last one, and there is no room for another.
    """
    b = ffi.new("struct aioumm_batch *")
    b.len = lib.STUB_BATCH_CAPACITY
    return b


#: See ``_full_batch``.
FULL_BATCH: Any = _full_batch()


class Batch:
    """Up to ``BATCH_CAPACITY`` records and up to ``MAX_FDS`` descriptors."""

    __slots__ = ("native",)

    def __init__(self) -> None:
        #: The ``struct aioumm_batch *`` that ``lib.aioumm_batch_add`` fills (``Stub`` calls
        #: it directly on its hot path; ``add`` is the same call with the result made Python).
        #: None once the batch is closed: the struct may belong to another batch by then.
        self.native: Any = _POOL.pop() if _POOL else ffi.new("struct aioumm_batch *")

    def add(
        self, op: Op, addr: int, length: int, prot: int = 0, fd: int = -1, offset: int = 0, shared: bool = True
    ) -> bool:
        """Queue a record, merged into the previous one when the rules allow.

        Returns False, queueing nothing, when the batch has no room for it
        (records or FD map full).  Raises ValueError for arguments the stub
        must never get (``Stub`` checks them first, and says which one is
        wrong), OSError for a bad descriptor (EBADF), or one that cannot be
        duplicated (EMFILE).
        """
        res: int = lib.aioumm_batch_add(
            self.native, op, addr, length, prot, fd, offset, _SHARED if shared else _PRIVATE
        )
        if res < 0:
            raise OSError(-res, os.strerror(-res))
        if res == _REFUSED:
            raise ValueError(f"batch: refused {op!r} addr={addr:#x} length={length:#x} prot={prot} offset={offset:#x}")
        return res == _QUEUED

    @property
    def dups(self) -> list[int]:
        """The batch's duplicates of its descriptors, by slot: what is sent with it."""
        b = self.native
        return list(b.dups[0 : b.nfds])

    def calls(self, records: int | None = None) -> int:
        """Queued calls merged into the first ``records`` records (all of them by default)."""
        b = self.native
        n = b.len if records is None else min(max(records, 0), b.len)
        return sum(b.calls[0:n])

    def record(self, index: int) -> Record:
        """The record at ``index``, decoded."""
        b = self.native
        if not 0 <= index < b.len:
            raise IndexError(f"record {index} of a batch of {b.len}")
        r = b.records[index]
        fd = b.fds[r.fd_slot] if 0 <= r.fd_slot < b.nfds else -1
        return Record(Op(r.op), r.addr, r.length, r.prot, fd, r.offset, r.flags == _SHARED, r.fd_slot, b.calls[index])

    def __len__(self) -> int:
        return 0 if self.native is None else int(self.native.len)

    def close(self) -> None:
        """Close the batch's descriptor duplicates and give its struct back; safe to call twice."""
        b, self.native = self.native, None
        if b is None:
            return
        res: int = lib.aioumm_batch_close(b)
        b.len = 0
        if len(_POOL) < _POOL_MAX:
            _POOL.append(b)
        if res < 0:
            raise OSError(-res, f"closing a batch's duplicates: {os.strerror(-res)}")

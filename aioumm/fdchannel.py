"""Passing descriptors to a stub (SCM_RIGHTS over its fd-0 socket).

Facts, and what follows from them
---------------------------------
* The channel is one end of an ``AF_UNIX``/``SOCK_SEQPACKET`` socketpair whose
  other end is the stub's fd 0.  SEQPACKET keeps message boundaries, so one
  batch's descriptors can never be read together with the next batch's.
* Descriptors go out **before** the page is handed back, in one
  non-blocking ``sendmsg`` (``aioumm_send_fds`` in ``_native.c``) whose
  data (a message needs some to carry ancillary data) is the batch's
  sequence number.  When the stub wakes, the message is already queued and
  its non-blocking ``recvmsg`` finds it.  If the controller fails between
  the send and the hand-back, the message stays queued; the next batch's
  stub sees the wrong sequence number, closes those descriptors and takes
  the next message, so a stale message can never map the wrong file.
* The socket can fill up only if the stub stops receiving (dead, stopped,
  or a hostile guest jumped into the handler).  The controller then awaits
  writability on the loop instead of blocking, for at most the handler
  timeout; a dead stub's end closes, which makes the socket writable and
  the retried ``sendmsg`` fail with EPIPE.  (An AF_UNIX socket reports
  itself writable again only once most of its queue has been read, so a
  full channel stays full until the stub has drained it: the timeout, not
  the next message, is what ends a stuck wait.)
* SCM_RIGHTS duplicates: the controller keeps its descriptors; the stub
  closes its copies after the batch, whatever the result.
* A control message the stub could not take whole (``MSG_CTRUNC``: its fd
  limit, or more descriptors than announced) fails that batch before any
  record runs; the stub reports ``STUB_BATCH_EFDS`` and never maps a wrong
  file.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from collections.abc import Sequence

from aioumm.abi import MAX_FDS, lib


class FdChannel:
    """The controller's end of one stub's FD-passing socket.

    Owns the socket; ``close`` is idempotent and makes later sends fail with
    ``EBADF`` rather than touching a reused descriptor number.
    """

    __slots__ = ("_loop", "_sock", "sent_fds", "sent_messages")

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._loop = loop
        self._sock: socket.socket | None = sock
        self.sent_messages = 0
        self.sent_fds = 0

    def fileno(self) -> int:
        return self._sock.fileno() if self._sock is not None else -1

    def send_init(self, payload: bytes) -> None:
        """Queue the init message (the socket is empty, so this never blocks)."""
        assert self._sock is not None
        self._sock.send(payload)

    async def send_fds(self, fds: Sequence[int], seq: int, timeout: float | None = None) -> None:
        """Send ``fds`` as one SCM_RIGHTS message tagged with batch number ``seq``.

        Awaits writability if the socket is full; with a timeout, raises
        ``TimeoutError`` when it stays full that long (the stub is not
        receiving: dead, stopped, or a hostile guest has its handler).
        """
        n = len(fds)
        if not 0 < n <= MAX_FDS:
            raise ValueError(f"send_fds: between 1 and {MAX_FDS} descriptors per message, got {n}")
        seq &= 0xFFFFFFFF
        while True:
            sock = self._sock
            if sock is None:
                raise OSError(errno.EBADF, "FD channel closed")
            # One native sendmsg: building the ancillary data in Python costs more than the call.
            res = lib.aioumm_send_fds(sock.fileno(), fds, n, seq)
            if res == -errno.EAGAIN:
                await asyncio.wait_for(self._writable(sock), timeout)
                continue
            if res < 0:
                raise OSError(-res, os.strerror(-res))
            self.sent_messages += 1
            self.sent_fds += n
            return

    async def _writable(self, sock: socket.socket) -> None:
        fut: asyncio.Future[None] = self._loop.create_future()
        fd = sock.fileno()

        def ready() -> None:
            if not fut.done():
                fut.set_result(None)

        self._loop.add_writer(fd, ready)
        try:
            await fut
        finally:
            self._loop.remove_writer(fd)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

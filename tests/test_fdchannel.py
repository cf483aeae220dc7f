"""The FD channel never blocks the loop: a full socket is awaited, then the send completes."""

from __future__ import annotations

import array
import asyncio
import os
import socket
import struct

import pytest

from aioumm.fdchannel import FdChannel


def _receive(sock: socket.socket) -> tuple[int, list[int]]:
    """One message: its sequence number and descriptors (-1 and none at end of stream)."""
    data, anc, flags, _ = sock.recvmsg(4, socket.CMSG_SPACE(4 * 4))
    if not data:
        return -1, []
    fds: list[int] = []
    for level, kind, payload in anc:
        assert (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS)
        fds += array.array("i", payload[: len(payload) - len(payload) % 4]).tolist()
    assert not flags & socket.MSG_CTRUNC
    return struct.unpack("<I", data)[0], fds


@pytest.mark.asyncio
async def test_a_full_socket_is_awaited_not_blocked_on() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    theirs.setblocking(False)
    channel = FdChannel(asyncio.get_running_loop(), ours)
    fd = os.memfd_create("passed", os.MFD_CLOEXEC)
    sent = 0
    try:
        # Fill the socket: every send succeeds until the kernel says EAGAIN.
        while True:
            task = asyncio.ensure_future(channel.send_fds([fd], sent))
            await asyncio.sleep(0)
            if not task.done():
                break
            task.result()
            sent += 1
        assert sent > 0 and not task.done()
        ticks = 0
        for _ in range(20):  # the loop keeps running while the send waits
            await asyncio.sleep(0)
            ticks += 1
        assert ticks == 20 and not task.done()
        # Receive until the waiting send goes out (an AF_UNIX socket reports itself writable
        # again only once most of its queue is drained), checking every message on the way.
        expected = 0
        while not task.done():
            seq, fds = _receive(theirs)
            assert seq == expected and len(fds) == 1
            assert os.fstat(fds[0]).st_ino == os.fstat(fd).st_ino  # the file we sent
            os.close(fds[0])
            expected += 1
            await asyncio.sleep(0.001)
        task.result()
        assert 0 < expected <= sent and channel.sent_messages == sent + 1
        while expected <= sent:  # the rest, the waiting one last
            seq, fds = _receive(theirs)
            assert seq == expected
            for passed in fds:
                os.close(passed)
            expected += 1
    finally:
        channel.close()
        theirs.close()
        os.close(fd)


@pytest.mark.asyncio
async def test_a_send_that_stays_blocked_times_out() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    channel = FdChannel(asyncio.get_running_loop(), ours)
    fd = os.memfd_create("passed", os.MFD_CLOEXEC)
    try:
        with pytest.raises(TimeoutError):
            for seq in range(100000):
                await channel.send_fds([fd], seq, timeout=0.1)
    finally:
        channel.close()
        # Whatever is still queued holds duplicates: receiving and closing them drops them.
        theirs.setblocking(False)
        while True:
            try:
                seq, fds = _receive(theirs)
            except BlockingIOError:
                break
            if seq < 0:
                break
            for passed in fds:
                os.close(passed)
        theirs.close()
        os.close(fd)


@pytest.mark.asyncio
async def test_bad_arguments_and_a_closed_channel() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    channel = FdChannel(asyncio.get_running_loop(), ours)
    with pytest.raises(ValueError, match="between 1 and 4"):
        await channel.send_fds([], 0)
    with pytest.raises(ValueError, match="between 1 and 4"):
        await channel.send_fds([0, 1, 2, 0, 1], 0)
    channel.close()
    channel.close()  # idempotent
    with pytest.raises(OSError, match="closed"):
        await channel.send_fds([0], 0)
    theirs.close()

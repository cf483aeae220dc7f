"""The stub: one child process, one guest address space, driven from the loop.

A ``Stub`` is made by ``Controller.spawn`` and is either *stopped* (it has
handed its data page over: a report is pending, registers can be read and
edited, records can be queued and flushed), *running* (guest code, or the
handler working through a batch), or *dead*.  Every wait is a coroutine; no
thread is ever used.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import fcntl
import operator
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aioumm.abi import (
    BATCH_EFDS,
    BOOTSTRAP_FILE,
    DATA_SIZE,
    PAGE_SIZE,
    STUB_END,
    STUB_START,
    TASK_TOP,
    Command,
    Op,
    StubExit,
    ffi,
    lib,
)
from aioumm.batch import FULL_BATCH, Batch
from aioumm.errors import (
    BadArgument,
    BatchError,
    FdPassingError,
    SpawnError,
    StubBusy,
    StubCorrupt,
    StubDied,
    StubTimeout,
)
from aioumm.fdchannel import FdChannel
from aioumm.futex_bridge import HandoffBridge
from aioumm.report import Registers, Report, ReportReader

if TYPE_CHECKING:
    from aioumm.loop import Controller

_NR_GETPID = 39
_PROT_ALL = 0x7  # PROT_READ | PROT_WRITE | PROT_EXEC

# Signals every stub starts with at their default action, whatever the controller ignores.
_DEFAULT_SIGNALS = frozenset(s for s in signal.Signals if s not in (signal.SIGKILL, signal.SIGSTOP))
_SPAWN_FD_SOURCES_MIN = 4  # sources of the spawn's dup2 actions must not be targets (0..3)


_RESUME = int(Command.RESUME)
_BATCH = int(Command.BATCH)
_clock = time.perf_counter_ns
_FLUSH_THEN_RESUME = object()  # resume(answer)'s answer queued records: flush, then resume
_OFFSET_LIMIT = 1 << 63
_FD_MAX = (1 << 31) - 1
_batch_add = lib.aioumm_batch_add
_batch_load = lib.aioumm_batch_load
_FULL, _QUEUED, _REFUSED = lib.AIOUMM_BATCH_FULL, lib.AIOUMM_BATCH_QUEUED, lib.AIOUMM_BATCH_REFUSED
_MMAP, _MUNMAP, _MPROTECT = int(Op.MMAP), int(Op.MUNMAP), int(Op.MPROTECT)
_MAP_SHARED, _MAP_PRIVATE = lib.STUB_MAP_SHARED, lib.STUB_MAP_PRIVATE


def _errname(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, str(exc.errno))


def _integer(call: str, argument: str, value: object) -> int:
    """``value`` as an int (anything with ``__index__``), or a BadArgument naming it."""
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise BadArgument(call, argument, f"{value!r} is not an integer") from None


class State(enum.Enum):
    """Life cycle of a stub."""

    STARTING = "starting"
    STOPPED = "stopped"
    RUNNING = "running"
    DEAD = "dead"


# The states as module constants: the per-round-trip paths test and set them.
_DEAD = State.DEAD
_STOPPED = State.STOPPED
_RUNNING = State.RUNNING


@dataclass(frozen=True, slots=True)
class ExitStatus:
    """How a stub process ended: ``code`` or ``signal`` (neither if another party reaped it)."""

    code: int | None = None
    signal: int | None = None

    def describe(self) -> str:
        if self.code is None and self.signal is None:
            return "reaped by someone else: status unknown"
        if self.signal is not None:
            try:
                name = signal.Signals(self.signal).name
            except ValueError:
                name = str(self.signal)
            return f"killed by {name}"
        assert self.code is not None
        try:
            reason = StubExit(self.code)
        except ValueError:
            return f"exited with status {self.code}"
        return f"exited with status {self.code} ({reason.name}: {reason.explanation})"


class Stub:
    """One stub child process (see the module docstring for its states)."""

    def __init__(self, controller: Controller, pid: int, pidfd: int, channel: FdChannel, data_fd: int) -> None:
        loop = controller.loop
        self.controller = controller
        self._stats = controller.stats
        self.pid = pid
        self._loop = loop
        self._pidfd = pidfd
        self._channel = channel
        self._base = lib.aioumm_map_shared(data_fd, DATA_SIZE)
        if self._base == ffi.NULL:
            err = ffi.errno
            raise OSError(err, f"mapping the stub data page: {os.strerror(err)}")
        self._page = ffi.buffer(self._base, DATA_SIZE)
        self._base_addr = int(ffi.cast("uintptr_t", self._base))
        self._data = ffi.cast("struct stub_data *", self._base)
        self._bridge: HandoffBridge | None = None
        self._state = State.STARTING
        self._report: Report | None = None
        self._frame: Any = None
        # Queued records, in batches run in order at the next flush; records go into the last,
        # whose native struct is _open (the hot path's one attribute load).  With nothing
        # queued there is no batch, and _open is FULL_BATCH: the first record opens one.
        self._batches: list[Batch] = []
        self._open: Any = FULL_BATCH
        self._exit: asyncio.Future[ExitStatus] = loop.create_future()
        self._busy = False
        self._batch_seq = 0
        self._answer: Callable[[Report], bool] | None = None  # resume()'s, while it waits
        self._outcome: object = None  # what the answer path left for resume(): see there
        # Adaptive placement (placement.py): on the controller's CPU, the average run, the last resume.
        self._placement = controller.placement
        self._at_home = True
        self._run_avg = 0
        self._resumed_at = 0
        self._reports = 0  # reports taken so far: an interrupt's deadline checks for a newer one
        self._death_note = ""  # why the controller killed it, for the StubDied message
        self.regs = Registers(self, self._data)
        self._reader = ReportReader(pid, self._data, self._base_addr)
        loop.add_reader(pidfd, self._on_exit)
        # Known to the controller from its first moment: a controller that closes while
        # this stub is still starting kills it too.
        controller._adopt(self)

    # ----------------------------------------------------------------- life cycle

    @classmethod
    async def spawn(
        cls, controller: Controller, *, inject_exit: int = 0, mangle_init: Callable[[bytes], bytes] | None = None
    ) -> Stub:
        """Start a stub and wait for it to be ready (see ``Controller.spawn``)."""
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        owned: list[int] = []  # closed if the stub never comes to own them
        temps: list[int] = []
        step = "creating its eventfd"
        try:
            evfd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
            owned.append(evfd)
            step = "creating its data memfd"
            data_fd = os.memfd_create("aioumm-stub-data", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
            owned.append(data_fd)
            os.ftruncate(data_fd, DATA_SIZE)
            # The stub must never be able to shrink the page under the controller (SIGBUS here).
            fcntl.fcntl(data_fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
            init = ffi.new(
                "struct stub_init *",
                {
                    "magic": lib.STUB_INIT_MAGIC,
                    "abi_version": lib.STUB_ABI_VERSION,
                    "flags": controller.features.init_flags,
                    "inject_exit": inject_exit,
                    "code_size": controller.code_size,
                },
            )
            payload = bytes(ffi.buffer(init))
            parent.send(mangle_init(payload) if mangle_init else payload)

            def high(fd: int) -> int:
                if fd >= _SPAWN_FD_SOURCES_MIN:
                    return fd
                new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, _SPAWN_FD_SOURCES_MIN)
                temps.append(new)
                return new

            actions = [
                (os.POSIX_SPAWN_DUP2, high(child.fileno()), lib.STUB_FD_CHANNEL),
                (os.POSIX_SPAWN_DUP2, high(evfd), lib.STUB_FD_EVENT),
                (os.POSIX_SPAWN_DUP2, high(controller.code_fd), lib.STUB_FD_CODE),
                (os.POSIX_SPAWN_DUP2, high(data_fd), lib.STUB_FD_DATA),
            ]
            step = f"executing {BOOTSTRAP_FILE}"
            pid = os.posix_spawn(
                BOOTSTRAP_FILE,
                ["aioumm-stub"],
                {},
                file_actions=actions,
                setpgroup=0,
                setsigmask=(),
                setsigdef=_DEFAULT_SIGNALS,
            )
        except OSError as exc:
            parent.close()
            for fd in owned:
                os.close(fd)
            raise SpawnError(None, f"cannot start a stub: {step} failed: {exc.strerror} ({_errname(exc)})") from exc
        except BaseException:
            parent.close()
            for fd in owned:
                os.close(fd)
            raise
        finally:
            child.close()
            for fd in temps:
                os.close(fd)
        pidfd = -1
        try:
            pidfd = os.pidfd_open(pid)
            stub = cls(controller, pid, pidfd, FdChannel(controller.loop, parent), data_fd)
        except BaseException as exc:
            # pidfd_open cannot race with pid reuse here: the child is ours and not reaped yet.
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            if pidfd >= 0:
                os.close(pidfd)
            parent.close()
            os.close(evfd)
            if isinstance(exc, OSError):
                raise SpawnError(pid, f"cannot watch the new stub: {exc.strerror} ({_errname(exc)})") from exc
            raise
        finally:
            os.close(data_fd)
        stub._bridge = HandoffBridge(controller.notifications, stub._data, evfd)
        try:
            await stub._await_ready(controller.spawn_timeout)
        except BaseException:
            stub.kill()
            await asyncio.shield(stub._exit)
            raise
        return stub

    async def _await_ready(self, timeout: float) -> None:
        assert self._bridge is not None
        try:
            answered = await self._bridge.wait(timeout)
        except StubDied as exc:
            code = exc.status.code if isinstance(exc.status, ExitStatus) else None
            raise SpawnError(self.pid, f"bootstrap failed: {exc.reason}", code) from None
        if not answered:
            raise SpawnError(self.pid, f"no ready report within {2 * timeout:g}s")
        if self._state is State.DEAD:
            raise SpawnError(self.pid, "died right after its ready report")
        report = self._take_report()
        if report.signal != signal.SIGSYS or report.syscall != _NR_GETPID:
            raise SpawnError(self.pid, f"first report should be the bootstrap's trapped getpid, got {report}")
        # The guest owns everything but the stub pages: drop the bootstrap image,
        # its stack, the vDSO and vvar, wherever they were placed.
        self._queue(_MUNMAP, 0, STUB_START)
        self._queue(_MUNMAP, STUB_END, TASK_TOP - STUB_END)
        await self.flush()

    def _on_exit(self) -> None:
        try:
            res = os.waitid(os.P_PIDFD, self._pidfd, os.WEXITED | os.WNOHANG)
        except ChildProcessError:
            # Reaped by someone else (a SIGCHLD set to SIG_IGN, a stray waitpid(-1)): it is
            # gone all the same, and its pidfd stays readable for ever - release it now.
            status = ExitStatus()
        else:
            if res is None:
                return
            exited = res.si_code == os.CLD_EXITED
            status = ExitStatus(code=res.si_status) if exited else ExitStatus(signal=res.si_status)
        self._state = State.DEAD
        self._frame = None
        text = status.describe()
        if status.code is not None and status.code >= StubExit.HANDLER_WAIT:
            line = self._data.fatal_line  # written by the stub itself: a hint, not a fact
            if 0 < line < 100000:
                text += f", at stub_code.c:{line} (as the stub reports)"
        if self._death_note:
            text += f" ({self._death_note})"
        exc = StubDied(self.pid, text, status)
        if self._bridge is not None:
            self._bridge.fail(exc)
        self._release()
        if not self._exit.done():
            self._exit.set_result(status)

    def _release(self) -> None:
        """Free every resource of a dead stub (descriptors, the page mapping, loop watchers)."""
        if self._pidfd >= 0:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1
        if self._bridge is not None:
            self._bridge.close()
        if self._placement is not None:
            self._placement.forget(self)
        self._channel.close()
        for batch in self._batches:
            batch.close()
        self._batches = []
        self._open = FULL_BATCH
        if self._base is not None:
            # Every access to the page checks the state first (after each await too), and the
            # views drop their pointers here, so nothing touches the page after this.
            self._page = None
            lib.aioumm_unmap(self._base, DATA_SIZE)
            self._base = None
            self._data = ffi.NULL
            self.regs._data = ffi.NULL
            self._reader.close()
        self.controller._forget(self)

    def kill(self) -> None:
        """Kill the stub (SIGKILL through its pidfd); ``wait_exit`` reaps it."""
        if self._pidfd >= 0:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)

    def interrupt(self, timeout: float | None = 1.0) -> None:
        """Send SIGALRM: a running guest stops with a SIGALRM report.

        A stopped stub gets it as soon as it is resumed (the handler runs
        with every signal blocked).  A guest can block SIGALRM by faking a
        signal return through the stub's restorer; a stub that has not
        reported within ``timeout`` seconds of the interrupt (None: no limit)
        is therefore killed, and its ``resume`` raises ``StubDied`` saying so.
        """
        self._require_alive("interrupt")
        signal.pidfd_send_signal(self._pidfd, signal.SIGALRM)
        if timeout is not None:
            self._loop.call_later(timeout, self._interrupt_deadline, timeout, self._reports)

    def _interrupt_deadline(self, timeout: float, reports_then: int) -> None:
        if self._reports == reports_then and self._state is State.RUNNING and not self._busy:
            self._death_note = f"it did not stop within {timeout:g}s of interrupt(): SIGALRM blocked?"
            self.kill()

    async def wait_exit(self) -> ExitStatus:
        """Wait until the stub process has ended and been reaped."""
        return await asyncio.shield(self._exit)

    @property
    def state(self) -> State:
        return self._state

    @property
    def report(self) -> Report | None:
        """The pending report while stopped, else None."""
        return self._report if self._state is State.STOPPED else None

    @property
    def exit_status(self) -> ExitStatus | None:
        return self._exit.result() if self._exit.done() else None

    # ----------------------------------------------------------------- reports

    def _require_alive(self, call: str) -> None:
        if self._state is State.DEAD:
            status = self._exit.result() if self._exit.done() else None
            raise StubDied(self.pid, f"{call}: stub is dead ({status.describe() if status else 'killed'})", status)

    def _require_stopped(self, call: str) -> None:
        self._require_alive(call)
        if self._state is not State.STOPPED or self._busy:
            raise StubBusy(self.pid, f"{call}: the stub is {self._state.value}; it must be stopped")

    def _stopped_frame(self) -> Any:
        """The saved registers; ``_frame`` is None exactly when they may not be touched."""
        self._require_stopped("registers")
        return self._frame

    def _take_report(self) -> Report:
        try:
            report, frame = self._reader.read()
        except StubCorrupt:
            self.kill()
            raise
        self._report = report
        self._frame = frame
        self._state = _STOPPED
        self._reports += 1
        return report

    async def resume(self, answer: Callable[[Report], bool] | None = None) -> Report:
        """Flush queued records, run the guest until it stops again, return the new report.

        ``answer``, if given, sees each report first, straight from the loop's
        callback for the stub's notification and without waking this
        coroutine: it may read and edit the registers and queue records, and
        returns True to resume the stub at once (any queued records are
        flushed first), False to have ``resume`` return that report.  What it
        raises, ``resume`` raises, with the stub stopped at that report.  This
        is the fast path for reports that need no waiting: it saves a task
        switch per round trip.
        """
        if self._state is not _STOPPED or self._busy:
            self._require_stopped("resume")
        bridge = self._bridge
        assert bridge is not None
        while True:
            if self._batches:
                await self.flush()
            self._outcome = None
            self._answer = answer
            self._go(bridge)
            if answer is not None:
                bridge.offer = self._offer
            # No deadline: guest code runs as long as it likes (a batch's wait has one: _run_batch).
            try:
                waiter = bridge.arm()
                bridge.spin()  # a lone stub's next report may come before this task would suspend
                await waiter
            except asyncio.CancelledError:
                self.kill()
                raise
            finally:
                bridge.disarm()
                bridge.offer = None
                self._answer = None
            outcome, self._outcome = self._outcome, None
            if isinstance(outcome, BaseException):
                raise outcome
            self._require_alive("resume")  # it may have handed over and died before this task ran
            if outcome is None:
                if self._placement is not None:
                    self._placement.ran(self, _clock() - self._resumed_at)
                return self._take_report()
            if outcome is _FLUSH_THEN_RESUME:
                continue
            assert isinstance(outcome, Report)
            return outcome

    def _go(self, bridge: HandoffBridge) -> None:
        """Let the guest run on: the registers are out of reach again, and the page is handed back."""
        placement = self._placement
        if placement is not None:
            self._resumed_at = now = _clock()
            placement.resumed(self, now)
        self._state = _RUNNING
        self._report = None
        self._frame = None
        bridge._notifications.hand_back(bridge, _RESUME)
        self._stats.round_trips += 1  # after: the stub runs meanwhile

    def _offer(self) -> bool:
        """The bridge's callback while ``resume(answer)`` waits (see there); never raises."""
        answer = self._answer
        bridge = self._bridge
        if answer is None or bridge is None:
            return False
        placement = self._placement
        if placement is not None:
            placement.ran(self, _clock() - self._resumed_at)
        try:
            report = self._take_report()
            if not answer(report):
                self._outcome = report
                return False
        except BaseException as exc:  # given to the waiting resume(), which raises it
            self._outcome = exc
            return False
        if self._batches:
            # Flushing waits for the stub: only the coroutine can do that.
            self._outcome = _FLUSH_THEN_RESUME
            return False
        try:
            self._go(bridge)
        except OSError as exc:
            self._outcome = exc
            return False
        return True

    # ----------------------------------------------------------------- batches

    def mmap(self, addr: int, length: int, prot: int, fd: int = -1, offset: int = 0, *, shared: bool = True) -> None:
        """Queue ``mmap(addr, length, prot, MAP_FIXED | MAP_SHARED or MAP_PRIVATE, fd, offset)``.

        ``fd`` is a controller descriptor (-1: anonymous memory); it is
        passed to the stub with the batch that needs it.  Arguments are
        checked now; the record runs at the next ``flush`` or ``resume``.
        """
        # The types are tested here (cffi would take anything with __int__), the values by the
        # native add, which refuses what the stub must never get; either way _checked then says
        # which argument is wrong.  (This is the guest's hot path: the range tests cost more
        # in Python than the whole native call.)
        if not (
            type(addr) is int
            and type(length) is int
            and type(prot) is int
            and type(fd) is int
            and type(offset) is int
            and self._state is not _DEAD
        ):
            addr, length, prot, fd, offset = self._checked("mmap", addr, length, prot=prot, fd=fd, offset=offset)
        flags = _MAP_SHARED if shared else _MAP_PRIVATE
        try:
            res = _batch_add(self._open, _MMAP, addr, length, prot, fd, offset, flags)
        except OverflowError:  # outside an argument's C type: out of range all the same
            res = _REFUSED
        if res != _QUEUED:
            self._queue_slow(res, _MMAP, addr, length, prot, fd, offset, flags)

    def munmap(self, addr: int, length: int) -> None:
        """Queue ``munmap(addr, length)``."""
        if not (type(addr) is int and type(length) is int and self._state is not _DEAD):
            addr, length = self._checked("munmap", addr, length)
        self._queue(_MUNMAP, addr, length)

    def mprotect(self, addr: int, length: int, prot: int) -> None:
        """Queue ``mprotect(addr, length, prot)``."""
        if not (type(addr) is int and type(length) is int and type(prot) is int and self._state is not _DEAD):
            addr, length, prot = self._checked("mprotect", addr, length, prot=prot)
        self._queue(_MPROTECT, addr, length, prot)

    def _checked(self, call: str, addr: object, length: object, **more: object) -> tuple[int, ...]:
        """The slow path of the checks: raise the error naming the wrong argument, or return them as ints.

        (Integer-like values that are not plain ints, such as an IntEnum, get here with valid values.)
        """
        self._require_alive(call)
        a = _integer(call, "addr", addr)
        n = _integer(call, "length", length)
        if a < 0 or a % PAGE_SIZE:
            raise BadArgument(call, "addr", f"{a:#x} is not page-aligned")
        if n <= 0:
            raise BadArgument(call, "length", f"{n} is not positive")
        if n % PAGE_SIZE:
            raise BadArgument(call, "length", f"{n:#x} is not a multiple of the page size")
        if a + n > TASK_TOP:
            raise BadArgument(call, "addr", f"[{a:#x}, {a + n:#x}) reaches past the user address space")
        if a < STUB_END and a + n > STUB_START:
            raise BadArgument(
                call, "addr", f"[{a:#x}, {a + n:#x}) overlaps the stub area [{STUB_START:#x}, {STUB_END:#x})"
            )
        values = [a, n]
        if "prot" in more:
            prot = _integer(call, "prot", more["prot"])
            if not 0 <= prot <= _PROT_ALL:
                raise BadArgument(call, "prot", f"{prot:#x} has bits other than PROT_READ|PROT_WRITE|PROT_EXEC")
            values.append(prot)
        if "fd" in more:
            fd = _integer(call, "fd", more["fd"])
            if not -1 <= fd <= _FD_MAX:
                raise BadArgument(call, "fd", f"{fd} is not a descriptor (use -1 for anonymous memory)")
            values.append(fd)
        if "offset" in more:
            offset = _integer(call, "offset", more["offset"])
            if not (0 <= offset < _OFFSET_LIMIT - n and not offset % PAGE_SIZE):
                raise BadArgument(call, "offset", f"{offset:#x} is not a page-aligned file offset below 2**63 - length")
            values.append(offset)
        return tuple(values)

    def _open_batch(self) -> None:
        batch = Batch()
        self._batches.append(batch)
        self._open = batch.native

    def _queue(self, op: int, addr: int, length: int, prot: int = 0) -> None:
        """Queue a record that names no descriptor."""
        try:
            res = _batch_add(self._open, op, addr, length, prot, -1, 0, _MAP_SHARED)
        except OverflowError:
            res = _REFUSED
        if res != _QUEUED:
            self._queue_slow(res, op, addr, length, prot, -1, 0, _MAP_SHARED)

    def _queue_slow(
        self, res: int, op: int, addr: int, length: int, prot: int, fd: int, offset: int, flags: int
    ) -> None:
        """The rest of queueing, after ``aioumm_batch_add`` returned ``res`` (see there)."""
        if res == _FULL:
            # The open batch is full (or there is none): open one (which always has room) and go on there.
            self._open_batch()
            res = _batch_add(self._open, op, addr, length, prot, fd, offset, flags)
            if res != _QUEUED:  # refused: no empty batch stays behind to be flushed for nothing
                self._batches.pop().close()
                self._open = self._batches[-1].native if self._batches else FULL_BATCH
        if res == _REFUSED:
            if op == _MMAP:
                self._checked("mmap", addr, length, prot=prot, fd=fd, offset=offset)
            elif op == _MPROTECT:
                self._checked("mprotect", addr, length, prot=prot)
            else:
                self._checked("munmap", addr, length)
            # The two checks are one rule written twice; tests/test_bad_input.py holds them together.
            raise AssertionError(f"the native batch refused what Stub._checked accepts: {addr=:#x} {length=:#x}")
        if res == -errno.EBADF:
            raise BadArgument("mmap", "fd", f"{fd} is closed or invalid (EBADF)")
        if res < 0:
            # Not the caller's fault (EMFILE: the controller is out of descriptors): say what failed.
            raise OSError(-res, f"mmap: duplicating fd {fd} for the batch: {os.strerror(-res)}")

    @property
    def queued(self) -> int:
        """Records waiting for the next flush (after merging)."""
        return sum(len(b) for b in self._batches)

    async def flush(self) -> None:
        """Run every queued record in the stub, in order.

        Raises ``BatchError`` for the first record that fails (the rest are
        dropped, the stub stays stopped and usable), ``FdPassingError`` if
        the descriptors could not be passed (no record of that batch ran).
        """
        self._require_stopped("flush")
        batches, self._batches = self._batches, []
        self._open = FULL_BATCH  # records queued while these run go to the next flush
        try:
            for batch in batches:
                if len(batch):
                    await self._run_batch(batch, batches)
        finally:
            for batch in batches:
                batch.close()

    async def _run_batch(self, batch: Batch, batches: list[Batch]) -> None:
        """Run ``batch``, one of the ``batches`` of a flush (which ran in order up to it)."""
        assert self._bridge is not None
        stats = self.controller.stats
        self._busy = True
        try:
            self._batch_seq = seq = (self._batch_seq + 1) & 0xFFFFFFFF
            nfds = batch.native.nfds
            dups = batch.native.dups[0:nfds]  # what aioumm_send_fds takes, without a list
            if nfds:
                try:
                    await self._channel.send_fds(dups, seq, self.controller.handler_timeout)
                except TimeoutError:
                    self.kill()
                    raise StubTimeout(
                        self.pid,
                        f"flush: the FD channel stayed full for {self.controller.handler_timeout:g}s "
                        "(the stub is not receiving); killed",
                    ) from None
                except OSError as exc:
                    if exc.errno in (errno.EPIPE, errno.ECONNRESET, errno.ECONNREFUSED):
                        # The stub is gone or going: say so once its exit has been reaped.
                        await asyncio.wait({self._exit}, timeout=self.controller.handler_timeout)
                    self._require_alive("flush")
                    raise FdPassingError(
                        self.pid, f"flush: passing {nfds} descriptor(s) failed: {exc}; no record ran"
                    ) from exc
                stats.fds_passed += nfds
                self._require_alive("flush")  # the send awaited: the page is gone if the stub is
            data = self._data
            n = _batch_load(data, batch.native, seq)
            self._state = State.RUNNING
            frame, self._frame = self._frame, None  # no register access while the batch runs
            bridge = self._bridge
            bridge.hand_back(_BATCH)
            timeout = self.controller.handler_timeout
            # Cancelling this wait kills the stub: it is somewhere in the batch, and no later
            # call could tell which result belongs to whom.
            try:
                answered = await bridge.wait(timeout)
            except asyncio.CancelledError:
                self.kill()
                raise
            if not answered:
                self.kill()
                raise StubTimeout(self.pid, f"flush: no answer within {2 * timeout:g}s (woken twice); killed")
            # It may have handed over and died before this task ran again: then its page is gone.
            self._require_alive("flush")
            self._state = State.STOPPED
            self._frame = frame
            stats.flushes += 1
            done, err = data.batch_done, data.batch_errno
        finally:
            self._busy = False
        if done > n or (err == 0 and done != n) or (err != 0 and done >= n and err != BATCH_EFDS):
            self.kill()
            raise StubCorrupt(self.pid, f"flush: impossible batch result ({done} of {n} done, errno {err}); killed")
        if err == BATCH_EFDS:
            raise FdPassingError(
                self.pid,
                f"flush: the stub did not receive exactly the {nfds} descriptor(s) sent "
                "(truncated control message?); no record ran",
            )
        if err:
            op, args = batch.record(done).describe()
            ran = sum(b.calls() for b in batches[: batches.index(batch)]) + batch.calls(done)
            raise BatchError(self.pid, op, args, err, ran)

    def __repr__(self) -> str:
        return f"<Stub pid={self.pid} {self._state.value}>"


__all__ = ["ExitStatus", "Report", "State", "Stub"]

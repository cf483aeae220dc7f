"""System V IPC of one run: shared memory segments, semaphore sets, message queues.

Every run has an :class:`IpcNamespace` of its own (``ProcessTable.ipc``), like a
container's IPC namespace: the guests of a run share it, never see the host's
objects, and everything left in it goes when the run ends (:meth:`IpcNamespace.close`).

Facts of Linux this follows:

* An object's id is ``seq * 32768 + index``: indexes are handed out in turn (a
  removed object's index is not reused at once), and a sequence number moves on
  each time they wrap around, so the id of a removed object stays invalid
  (``EINVAL``) for a long while.
* A shared memory segment is a file; each attachment maps it ``MAP_SHARED``.  Here
  it is a memfd (:class:`ShmBacking`), mapped into the guest like anonymous shared
  memory, so ``fork`` shares it and ``exec``/exit drop it without anything special.
  Its attach count is the number of mappings that use it.  ``IPC_RMID`` of an
  attached segment only marks it (``SHM_DEST``) and makes its key private; it goes
  with its last mapping.
* A semaphore operation list is applied all at once or not at all.  When it cannot
  go on, the caller sleeps in a queue; every change to a set then runs through the
  queue in order and *completes* the operations that can go on for their sleepers
  (their values change before they wake), as Linux's ``update_queue`` does.  The
  sleeper counted by ``GETNCNT``/``GETZCNT`` is counted on the operation it blocks on.
* ``SEM_UNDO`` adjustments belong to the process (a forked child starts without
  any, ``exec`` keeps them) and are applied when it exits; ``SETVAL``/``SETALL``
  clear them for the values they set.
* A message sent while a matching receiver sleeps is handed straight to it; senders
  that find the queue full sleep until a receive makes room.
* Removing a set or a queue wakes its sleepers with ``EIDRM``.

A sleeper woken with its operation done that is cancelled before it runs (a
signal arrived in the same loop turn) gives the operation back (:class:`Sleeper`),
so the guest's ``EINTR`` never hides an operation that took effect.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from .errors import SyscallError
from .layout import PAGE_SIZE
from .memory import SharedAnon

__all__ = [
    "IPC_PRIVATE",
    "Credentials",
    "IpcIds",
    "IpcNamespace",
    "IpcObject",
    "MsgQueue",
    "SemSet",
    "ShmBacking",
    "ShmSegment",
    "Sleeper",
]

IPC_PRIVATE = 0
IPC_CREAT = 0o1000
IPC_EXCL = 0o2000
IPC_NOWAIT = 0o4000
SHM_DEST = 0o1000
SHM_LOCKED = 0o2000
SEM_UNDO = 0x1000
MSG_NOERROR = 0o10000
MSG_EXCEPT = 0o20000
MSG_COPY = 0o40000

#: Index space of each kind of object (``IPCMNI``): ids are ``seq * IPCMNI + index``.
IPCMNI = 32768
SEQ_MAX = 0x7FFFFFFF // IPCMNI
#: Indexes are reused only after cycling through at least this many.
MIN_CYCLE = 64

# Linux's defaults, where they cost the controller nothing.
SHMMIN = 1
SHMMAX = 0xFFFFFFFFFFFFFFFF - (1 << 24)
SHMMNI = 4096
SHMSEG = SHMMNI
SEMMSL = 32000
SEMMNI = 32000
SEMOPM = 500
SEMVMX = 32767
SEMAEM = SEMVMX
MSGMAX = 8192
MSGMNB = 16384
MSGMNI = 32000
MSGSSZ = 16
MSGPOOL = MSGMNI * MSGMNB // 1024
MSGTQL = MSGMNB
MSGMAP = MSGMNB
MSGSEG = 0xFFFF

# What the controller holds for a run is bounded (its own memory, not the guest's):
#: Total bytes of shared memory segments (Linux: SHMALL pages, practically unbounded).
SHM_TOTAL = 64 << 30
#: Semaphores in all sets (Linux: SEMMNS = SEMMNI * SEMMSL).
SEM_TOTAL = 1 << 20
#: Message queues (Linux: MSGMNI).
MSG_QUEUES = 1024
SHMALL = SHM_TOTAL // PAGE_SIZE
SEMMNS = SEM_TOTAL

T = TypeVar("T")


def _fail(err: int) -> SyscallError:
    return SyscallError(err)


def _now() -> int:
    return int(time.time())


@dataclass(frozen=True)
class Credentials:
    """Who is asking: the calling guest's pid and effective ids."""

    pid: int
    euid: int
    egid: int


@dataclass(eq=False)
class IpcObject:
    """What every kind of object has: ``struct ipc_perm`` and its times."""

    key: int
    uid: int
    gid: int
    cuid: int
    cgid: int
    mode: int
    id: int = -1
    seq: int = 0
    ctime: int = field(default_factory=_now)

    def allows(self, who: Credentials, flag: int) -> bool:
        """Linux's ``ipcperms``: may ``who`` have the access in ``flag``'s rwx bits?"""
        requested = ((flag >> 6) | (flag >> 3) | flag) & 0o7
        granted = self.mode
        if who.euid in (self.uid, self.cuid):
            granted >>= 6
        elif who.egid in (self.gid, self.cgid):
            granted >>= 3
        return not requested & ~granted & 0o7 or who.euid == 0

    def check(self, who: Credentials, flag: int) -> None:
        """``EACCES`` unless :meth:`allows`."""
        if not self.allows(who, flag):
            raise _fail(errno.EACCES)

    def check_owner(self, who: Credentials) -> None:
        """``IPC_SET`` and ``IPC_RMID`` are for the owner, the creator and root: ``EPERM``."""
        if who.euid not in (0, self.uid, self.cuid):
            raise _fail(errno.EPERM)

    def set_perm(self, uid: int, gid: int, mode: int) -> None:
        """``IPC_SET``: new owner, group and permission bits (other mode bits stay)."""
        self.uid, self.gid = uid, gid
        self.mode = (self.mode & ~0o777) | (mode & 0o777)
        self.ctime = _now()


class IpcIds:
    """The objects of one kind, by index; ids as Linux makes them."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.objs: dict[int, IpcObject] = {}
        self._seq = 0
        self._last_idx = -1
        self._next = 0

    def add(self, obj: IpcObject) -> None:
        # Indexes are handed out cyclically below a bound that grows with the number
        # in use (at least 64), so a removed object's index is not reused at once.
        end = min(max(len(self.objs) * 3 // 2, MIN_CYCLE), self.limit)
        start = self._next if self._next < end else 0
        order = itertools.chain(range(start, end), range(0, start))
        idx = next((i for i in order if i not in self.objs), None)
        if idx is None:
            raise _fail(errno.ENOSPC)
        self._next = idx + 1
        if idx <= self._last_idx:
            self._seq = (self._seq + 1) % SEQ_MAX
        self._last_idx = idx
        obj.seq = self._seq
        obj.id = self._seq * IPCMNI + idx
        self.objs[idx] = obj

    def get(self, ident: int) -> IpcObject:
        if ident < 0:
            raise _fail(errno.EINVAL)
        obj = self.objs.get(ident % IPCMNI)
        if obj is None or obj.id != ident:
            raise _fail(errno.EINVAL)
        return obj

    def at_index(self, idx: int) -> IpcObject:
        """``*_STAT``: the object at an index (``EINVAL`` if there is none)."""
        obj = self.objs.get(idx) if 0 <= idx < IPCMNI else None
        if obj is None:
            raise _fail(errno.EINVAL)
        return obj

    def by_key(self, key: int) -> IpcObject | None:
        if key == IPC_PRIVATE:
            return None
        return next((o for o in self.objs.values() if o.key == key), None)

    def remove(self, obj: IpcObject) -> None:
        if self.objs.get(obj.id % IPCMNI) is obj:
            del self.objs[obj.id % IPCMNI]

    @property
    def max_index(self) -> int:
        return max(self.objs, default=0)


class Sleeper:
    """A guest asleep in ``semop``, ``msgsnd`` or ``msgrcv``.

    ``done`` gets the outcome: 0 or a byte count (the operation took effect,
    ``give_back`` undoes it if the guest never sees it), or an errno as a
    :class:`SyscallError` (``EIDRM``, ``E2BIG``...).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.done: asyncio.Future[int] = loop.create_future()
        self.give_back: Callable[[], None] | None = None

    def finish(self, result: int, give_back: Callable[[], None] | None = None) -> None:
        if not self.done.done():
            self.done.set_result(result)
            self.give_back = give_back

    def fail(self, err: int) -> None:
        if not self.done.done():
            self.done.set_exception(_fail(err))

    async def wait(self, timeout: float | None = None) -> int:
        """The outcome; ``EAGAIN`` after ``timeout`` seconds.  Cancelled: given back."""
        try:
            if timeout is None:
                return await asyncio.shield(self.done)
            # On the real clock: the loop's timers may fire a little early, a timeout may not.
            end = time.monotonic() + timeout
            while True:
                try:
                    return await asyncio.wait_for(asyncio.shield(self.done), max(end - time.monotonic(), 0) + 0.0001)
                except TimeoutError:
                    if self.done.done() or time.monotonic() >= end:
                        raise
        except TimeoutError:
            if self.done.done() and not self.done.cancelled() and self.done.exception() is None:
                result: int = self.done.result()  # done in the very turn the time ran out
                return result
            raise _fail(errno.EAGAIN) from None
        except asyncio.CancelledError:
            done = self.done.done() and not self.done.cancelled() and self.done.exception() is None
            if done and self.give_back is not None:
                self.give_back()
            raise
        finally:
            if not self.done.done():
                self.done.cancel()
            elif not self.done.cancelled():
                self.done.exception()  # retrieved: no "never retrieved" warning


# ------------------------------------------------------------------ shared memory


class ShmBacking(SharedAnon):
    """The memfd of a shared memory segment; every mapping of it is one attachment."""

    def __init__(self, segment: ShmSegment, length: int) -> None:
        super().__init__(length)
        self.segment = segment

    def acquire(self) -> None:
        self.segment.nattch += 1

    def drop(self) -> None:
        seg = self.segment
        seg.nattch -= 1
        if seg.nattch <= 0:
            seg.nattch = 0
            seg.dtime = _now()
            if seg.mode & SHM_DEST:
                seg.destroy()


@dataclass(eq=False)
class ShmSegment(IpcObject):
    """A shared memory segment (``struct shmid64_ds``)."""

    size: int = 0
    cpid: int = 0
    lpid: int = 0
    atime: int = 0
    dtime: int = 0
    nattch: int = 0
    backing: ShmBacking | None = None
    namespace: IpcNamespace | None = None

    @property
    def name(self) -> str:
        """What ``/proc/PID/maps`` calls an attachment."""
        return f"/SYSV{self.key & 0xFFFFFFFF:08x} (deleted)"

    def destroy(self) -> None:
        """Gone from the namespace now; the file goes with its last mapping."""
        ns, self.namespace = self.namespace, None
        if ns is not None:
            ns.shm.remove(self)
            ns.shm_bytes -= _pages(self.size)
        if self.nattch == 0 and self.backing is not None:
            self.backing.close()


def _host_memory() -> int:
    """The host's RAM in bytes: no single segment may be larger."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return SHM_TOTAL


def _pages(size: int) -> int:
    return (size + PAGE_SIZE - 1) // PAGE_SIZE * PAGE_SIZE


# ------------------------------------------------------------------- semaphores


@dataclass
class _SemOp:
    num: int
    op: int
    flags: int


@dataclass(eq=False)
class _SemSleeper:
    sleeper: Sleeper
    ops: list[_SemOp]
    who: Credentials
    #: The operation it last blocked on: (semaphore, waits for zero).
    blocked: tuple[int, bool]


@dataclass(eq=False)
class SemSet(IpcObject):
    """A semaphore set (``struct semid64_ds`` and the values)."""

    values: list[int] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)
    otime: int = 0
    queue: list[_SemSleeper] = field(default_factory=list)

    def count_waiting(self, num: int, zero: bool) -> int:
        """``GETNCNT`` (``zero`` False) or ``GETZCNT``."""
        return sum(1 for s in self.queue if s.blocked == (num, zero))


# --------------------------------------------------------------- message queues


@dataclass(eq=False)
class _Receiver:
    sleeper: Sleeper
    mtype: int
    flags: int
    maxsize: int
    who: Credentials
    #: The message handed over: (type, text).
    message: tuple[int, bytes] | None = None

    def wants(self, mtype: int) -> bool:
        return _matches(self.mtype, self.flags, mtype)


def _matches(want: int, flags: int, mtype: int) -> bool:
    if want == 0:
        return True
    if want < 0:
        return mtype <= -want
    return (mtype != want) if flags & MSG_EXCEPT else (mtype == want)


@dataclass(eq=False)
class MsgQueue(IpcObject):
    """A message queue (``struct msqid64_ds`` and the messages, oldest first)."""

    messages: deque[tuple[int, bytes]] = field(default_factory=deque)
    qbytes: int = MSGMNB
    cbytes: int = 0
    stime: int = 0
    rtime: int = 0
    lspid: int = 0
    lrpid: int = 0
    receivers: list[_Receiver] = field(default_factory=list)
    senders: list[Sleeper] = field(default_factory=list)

    def fits(self, size: int) -> bool:
        return self.cbytes + size <= self.qbytes and len(self.messages) + 1 <= self.qbytes

    def find(self, want: int, flags: int) -> int | None:
        """The index of the message ``msgrcv`` takes (``msgtyp`` ``want``), or None."""
        if want < 0:
            best: int | None = None
            for i, (mtype, _) in enumerate(self.messages):
                if mtype <= -want and (best is None or mtype < self.messages[best][0]):
                    best = i
            return best
        return next((i for i, (t, _) in enumerate(self.messages) if _matches(want, flags, t)), None)

    def wake_senders(self) -> None:
        senders, self.senders = self.senders, []
        for s in senders:
            s.finish(0)


def _discard(items: list[T], item: T) -> None:
    if item in items:
        items.remove(item)


# -------------------------------------------------------------------- namespace


class IpcNamespace:
    """The System V IPC objects of one run, and each process's semaphore undo values."""

    def __init__(self) -> None:
        self.shm = IpcIds(SHMMNI)
        self.sem = IpcIds(SEMMNI)
        self.msg = IpcIds(MSG_QUEUES)
        #: Bytes of shared memory (page-rounded) the segments hold.
        self.shm_bytes = 0
        self.sem_count = 0
        #: ``SEM_UNDO`` adjustments by pid: {(semid, semnum): value}.
        self.undo: dict[int, dict[tuple[int, int], int]] = {}
        self.closed = False

    # ------------------------------------------------------------ get

    def _get(
        self,
        ids: IpcIds,
        key: int,
        flags: int,
        who: Credentials,
        make: Callable[[IpcObject], IpcObject],
        more_checks: Callable[[IpcObject], None],
    ) -> int:
        """``*get``: an existing object by key, or a new one (``IPC_CREAT``, ``IPC_PRIVATE``)."""
        if self.closed:
            raise _fail(errno.EIDRM)
        found = ids.by_key(key)
        if found is None:
            if key != IPC_PRIVATE and not flags & IPC_CREAT:
                raise _fail(errno.ENOENT)
            base = IpcObject(key, who.euid, who.egid, who.euid, who.egid, flags & 0o777)
            obj = make(base)
            ids.add(obj)
            return obj.id
        if flags & IPC_CREAT and flags & IPC_EXCL:
            raise _fail(errno.EEXIST)
        more_checks(found)
        found.check(who, flags & 0o777)
        return found.id

    # ------------------------------------------------------ shared memory

    def shmget(self, key: int, size: int, flags: int, who: Credentials) -> int:
        """``shmget(2)``."""

        def make(base: IpcObject) -> IpcObject:
            if size < SHMMIN or size > SHMMAX:
                raise _fail(errno.EINVAL)
            length = _pages(size)
            if length > _host_memory():
                raise _fail(errno.ENOMEM)  # what Linux's overcommit check refuses
            if self.shm_bytes + length > SHM_TOTAL:
                raise _fail(errno.ENOSPC)
            seg = ShmSegment(**vars(base), size=size, cpid=who.pid, namespace=self)
            try:
                seg.backing = ShmBacking(seg, length)
            except OSError as exc:
                raise _fail(errno.ENOMEM) from exc
            self.shm_bytes += length
            return seg

        def more_checks(obj: IpcObject) -> None:
            assert isinstance(obj, ShmSegment)
            if obj.size < size:
                raise _fail(errno.EINVAL)

        return self._get(self.shm, key, flags, who, make, more_checks)

    def segment(self, shmid: int) -> ShmSegment:
        """The segment with this id (``EINVAL``)."""
        seg = self.shm.get(shmid)
        assert isinstance(seg, ShmSegment)
        return seg

    def shm_rmid(self, seg: ShmSegment, who: Credentials) -> None:
        """``shmctl(IPC_RMID)``: gone now if unattached, else at its last detach."""
        seg.check_owner(who)
        seg.mode |= SHM_DEST
        seg.key = IPC_PRIVATE
        seg.ctime = _now()
        if seg.nattch == 0:
            seg.destroy()

    # ---------------------------------------------------------- semaphores

    def semget(self, key: int, nsems: int, flags: int, who: Credentials) -> int:
        """``semget(2)``."""
        if nsems < 0 or nsems > SEMMSL:
            raise _fail(errno.EINVAL)

        def make(base: IpcObject) -> IpcObject:
            if nsems == 0:
                raise _fail(errno.EINVAL)
            if self.sem_count + nsems > SEMMNS:
                raise _fail(errno.ENOSPC)
            self.sem_count += nsems
            return SemSet(**vars(base), values=[0] * nsems, pids=[0] * nsems)

        def more_checks(obj: IpcObject) -> None:
            assert isinstance(obj, SemSet)
            if nsems > len(obj.values):
                raise _fail(errno.EINVAL)

        return self._get(self.sem, key, flags, who, make, more_checks)

    def semset(self, semid: int) -> SemSet:
        """The set with this id (``EINVAL``)."""
        sem = self.sem.get(semid)
        assert isinstance(sem, SemSet)
        return sem

    def semop(self, sem: SemSet, ops: list[tuple[int, int, int]], who: Credentials) -> Sleeper | None:
        """Apply ``ops`` (checked: numbers in range, permission) now, or queue a sleeper.

        Returns None when done; raises ``EAGAIN``/``ERANGE``; else the sleeper to await.
        """
        sops = [_SemOp(*o) for o in ops]
        outcome = self._try_ops(sem, sops, who)
        if outcome == 0:
            self._update(sem)
            return None
        if isinstance(outcome, int):
            raise _fail(outcome)
        sleeper = Sleeper(asyncio.get_running_loop())
        sem.queue.append(_SemSleeper(sleeper, sops, who, outcome))
        sleeper.done.add_done_callback(lambda _f: self._leave(sem, sleeper))
        return sleeper

    @staticmethod
    def _leave(sem: SemSet, sleeper: Sleeper) -> None:
        sem.queue[:] = [s for s in sem.queue if s.sleeper is not sleeper]

    def _try_ops(self, sem: SemSet, ops: list[_SemOp], who: Credentials) -> int | tuple[int, bool]:
        """Linux's ``perform_atomic_semop``: 0 (applied), an errno, or what it blocks on."""
        values = list(sem.values)
        undo = self.undo.get(who.pid, {})
        adjust: dict[int, int] = {}
        for o in ops:
            cur = values[o.num]
            result = cur + o.op
            if (o.op == 0 and cur) or result < 0:
                return errno.EAGAIN if o.flags & IPC_NOWAIT else (o.num, o.op == 0)
            if result > SEMVMX:
                return errno.ERANGE
            if o.flags & SEM_UNDO:
                adj = adjust.get(o.num, undo.get((sem.id, o.num), 0)) - o.op
                if adj < -SEMAEM - 1 or adj > SEMAEM:
                    return errno.ERANGE
                adjust[o.num] = adj
            values[o.num] = result
        sem.values = values
        for o in ops:
            sem.pids[o.num] = who.pid
        if adjust:
            mine = self.undo.setdefault(who.pid, {})
            for num, adj in adjust.items():
                if adj:
                    mine[(sem.id, num)] = adj
                else:
                    mine.pop((sem.id, num), None)
        sem.otime = _now()
        return 0

    def _give_back(self, sem: SemSet, ops: list[_SemOp], who: Credentials) -> Callable[[], None]:
        def give_back() -> None:
            if self.sem.objs.get(sem.id % IPCMNI) is not sem:
                return
            for o in ops:
                sem.values[o.num] = min(max(sem.values[o.num] - o.op, 0), SEMVMX)
                if o.flags & SEM_UNDO:
                    mine = self.undo.setdefault(who.pid, {})
                    adj = mine.get((sem.id, o.num), 0) + o.op
                    if adj:
                        mine[(sem.id, o.num)] = adj
                    else:
                        mine.pop((sem.id, o.num), None)
            self._update(sem)

        return give_back

    def _update(self, sem: SemSet) -> None:
        """Complete the sleepers' operations that can go on now, in queue order."""
        progress = True
        while progress:
            progress = False
            for s in list(sem.queue):
                if s.sleeper.done.done():
                    continue
                outcome = self._try_ops(sem, s.ops, s.who)
                if isinstance(outcome, tuple):
                    s.blocked = outcome
                    continue
                sem.queue.remove(s)
                if outcome == 0:
                    s.sleeper.finish(0, self._give_back(sem, s.ops, s.who))
                    progress = True
                    break
                s.sleeper.fail(outcome)

    def setval(self, sem: SemSet, nums: Iterable[int], values: Iterable[int], who: Credentials) -> None:
        """``SETVAL``/``SETALL`` (values checked): undo values of these semaphores cleared."""
        nums = list(nums)
        for num, value in zip(nums, values, strict=True):
            sem.values[num] = value
            sem.pids[num] = who.pid
        for mine in self.undo.values():
            for num in nums:
                mine.pop((sem.id, num), None)
        sem.ctime = _now()
        self._update(sem)

    def sem_rmid(self, sem: SemSet, who: Credentials) -> None:
        """``semctl(IPC_RMID)``: its sleepers wake with ``EIDRM``."""
        sem.check_owner(who)
        self._remove_sem(sem)

    def _remove_sem(self, sem: SemSet) -> None:
        self.sem.remove(sem)
        self.sem_count -= len(sem.values)
        for mine in self.undo.values():
            for k in [k for k in mine if k[0] == sem.id]:
                del mine[k]
        queue, sem.queue = sem.queue, []
        for s in queue:
            s.sleeper.fail(errno.EIDRM)

    def exit(self, pid: int) -> None:
        """Process ``pid`` is over: its ``SEM_UNDO`` adjustments are applied."""
        undo = self.undo.pop(pid, None)
        if not undo or self.closed:
            return
        touched: dict[int, SemSet] = {}
        for (semid, num), adj in undo.items():
            obj = self.sem.objs.get(semid % IPCMNI)
            if not isinstance(obj, SemSet) or obj.id != semid:
                continue
            obj.values[num] = min(max(obj.values[num] + adj, 0), SEMVMX)
            obj.pids[num] = pid
            touched[semid] = obj
        for sem in touched.values():
            sem.otime = _now()
            self._update(sem)

    # ------------------------------------------------------ message queues

    def msgget(self, key: int, flags: int, who: Credentials) -> int:
        """``msgget(2)``."""

        def make(base: IpcObject) -> IpcObject:
            return MsgQueue(**vars(base))

        return self._get(self.msg, key, flags, who, make, lambda _o: None)

    def queue(self, msqid: int) -> MsgQueue:
        """The queue with this id (``EINVAL``)."""
        q = self.msg.get(msqid)
        assert isinstance(q, MsgQueue)
        return q

    def msgsnd(self, q: MsgQueue, mtype: int, text: bytes, who: Credentials) -> bool:
        """Send if the queue has room (True); False: the caller sleeps (:meth:`wait_room`)."""
        if not q.fits(len(text)):
            return False
        q.lspid, q.stime = who.pid, _now()
        for r in list(q.receivers):
            if not r.wants(mtype) or r.sleeper.done.done():
                continue
            q.receivers.remove(r)
            if len(text) > r.maxsize and not r.flags & MSG_NOERROR:
                r.sleeper.fail(errno.E2BIG)
                continue
            q.lrpid, q.rtime = r.who.pid, _now()
            r.message = (mtype, text[: r.maxsize])
            r.sleeper.finish(len(r.message[1]), self._requeue(q, mtype, text))
            return True
        q.messages.append((mtype, text))
        q.cbytes += len(text)
        return True

    def _requeue(self, q: MsgQueue, mtype: int, text: bytes, at: int = 0) -> Callable[[], None]:
        def give_back() -> None:
            if self.msg.objs.get(q.id % IPCMNI) is q:
                q.messages.insert(min(at, len(q.messages)), (mtype, text))
                q.cbytes += len(text)

        return give_back

    def wait_room(self, q: MsgQueue) -> Sleeper:
        """A sender's sleep until a receive (or ``IPC_SET``) may have made room."""
        sleeper = Sleeper(asyncio.get_running_loop())
        q.senders.append(sleeper)
        sleeper.done.add_done_callback(lambda _f: _discard(q.senders, sleeper))
        return sleeper

    def msgrcv(self, q: MsgQueue, want: int, maxsize: int, flags: int, who: Credentials) -> tuple[int, bytes] | None:
        """Take the message ``msgtyp`` ``want`` names; None if there is none (``E2BIG``)."""
        i = q.find(want, flags)
        if i is None:
            return None
        mtype, text = q.messages[i]
        if len(text) > maxsize and not flags & MSG_NOERROR:
            raise _fail(errno.E2BIG)
        del q.messages[i]
        q.cbytes -= len(text)
        q.lrpid, q.rtime = who.pid, _now()
        q.wake_senders()
        return mtype, text[:maxsize]

    def wait_message(self, q: MsgQueue, want: int, maxsize: int, flags: int, who: Credentials) -> _Receiver:
        """A receiver's sleep until a matching message is handed to it."""
        r = _Receiver(Sleeper(asyncio.get_running_loop()), want, flags, maxsize, who)
        q.receivers.append(r)
        r.sleeper.done.add_done_callback(lambda _f: _discard(q.receivers, r))
        return r

    def msg_rmid(self, q: MsgQueue, who: Credentials) -> None:
        """``msgctl(IPC_RMID)``: its sleepers wake with ``EIDRM``."""
        q.check_owner(who)
        self._remove_msg(q)

    def _remove_msg(self, q: MsgQueue) -> None:
        self.msg.remove(q)
        q.messages.clear()
        q.cbytes = 0
        receivers, q.receivers = q.receivers, []
        for r in receivers:
            r.sleeper.fail(errno.EIDRM)
        senders, q.senders = q.senders, []
        for s in senders:
            s.fail(errno.EIDRM)

    # ------------------------------------------------------------ the end

    def close(self) -> None:
        """The run is over: every object goes (segments with their last mapping)."""
        if self.closed:
            return
        self.closed = True
        for obj in list(self.sem.objs.values()):
            assert isinstance(obj, SemSet)
            self._remove_sem(obj)
        for obj in list(self.msg.objs.values()):
            assert isinstance(obj, MsgQueue)
            self._remove_msg(obj)
        for obj in list(self.shm.objs.values()):
            assert isinstance(obj, ShmSegment)
            obj.mode |= SHM_DEST
            obj.destroy()
        self.undo.clear()

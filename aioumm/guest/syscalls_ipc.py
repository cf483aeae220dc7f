"""The System V IPC calls: ``shm*``, ``sem*`` and ``msg*``, served from the run's
:class:`~aioumm.guest.ipc.IpcNamespace`.

Imported, and so registered, when a guest first makes one of these calls (see :mod:`.syscalls`).
The arguments are checked in the order Linux checks them, so a hostile guest gets
the errno a native run would get.  ``semop``, ``msgsnd`` and ``msgrcv`` that have
to wait return a coroutine: the guest's stub stays stopped while it sleeps on the
loop, and a signal cuts the sleep short with ``EINTR`` (these calls are never
restarted, ``SA_RESTART`` or not).
"""

from __future__ import annotations

import errno
import struct
import time
from collections.abc import Awaitable

from .errors import SyscallError
from .ipc import (
    IPC_NOWAIT,
    IPC_PRIVATE,
    MSG_COPY,
    MSG_EXCEPT,
    MSGMAP,
    MSGMAX,
    MSGMNB,
    MSGPOOL,
    MSGSEG,
    MSGSSZ,
    MSGTQL,
    SEM_UNDO,
    SEMAEM,
    SEMMNI,
    SEMMNS,
    SEMMSL,
    SEMOPM,
    SEMVMX,
    SHM_LOCKED,
    SHMALL,
    SHMMAX,
    SHMMIN,
    SHMMNI,
    SHMSEG,
    Credentials,
    IpcIds,
    IpcNamespace,
    IpcObject,
    MsgQueue,
    SemSet,
    ShmBacking,
    ShmSegment,
)
from .layout import PAGE_MASK, PAGE_SIZE, page_up
from .memory import PROT_EXEC, PROT_READ, PROT_WRITE
from .process import GuestProcess
from .syscalls import s32, s64, syscall

IPC_RMID = 0
IPC_SET = 1
IPC_STAT = 2
IPC_INFO = 3
SHM_LOCK = 11
SHM_UNLOCK = 12
SHM_STAT = 13
SHM_INFO = 14
SHM_STAT_ANY = 15
GETPID = 11
GETVAL = 12
GETALL = 13
GETNCNT = 14
GETZCNT = 15
SETVAL = 16
SETALL = 17
SEM_STAT = 18
SEM_INFO = 19
SEM_STAT_ANY = 20
MSG_STAT = 11
MSG_INFO = 12
MSG_STAT_ANY = 13

SHM_RDONLY = 0o10000
SHM_RND = 0o20000
SHM_REMAP = 0o40000
SHM_EXEC = 0o100000
#: ``SHMLBA`` on x86-64: attach addresses are page-aligned.
SHMLBA = PAGE_SIZE

#: ``struct ipc64_perm``: key, uid, gid, cuid, cgid, mode, seq.
_PERM = struct.Struct("<iIIIIIH2x4x16x")
_SHMID_DS = struct.Struct("<48sQqqqiiQ16x")
_SEMID_DS = struct.Struct("<48sq8xq8xQ16x")
_MSQID_DS = struct.Struct("<48sqqqQQQii16x")
_SHMINFO = struct.Struct("<QQQQQ32x")
_SHM_INFO = struct.Struct("<i4xQQQQQ")
_SEMINFO = struct.Struct("<10i")
_MSGINFO = struct.Struct("<7iH2x")
_SEMBUF = struct.Struct("<HhH")
_TIMESPEC = struct.Struct("<qq")
_LONG = struct.Struct("<q")

_CMDS = {
    "shm": {0: "IPC_RMID", 1: "IPC_SET", 2: "IPC_STAT", 3: "IPC_INFO", 11: "SHM_LOCK", 12: "SHM_UNLOCK"}
    | {13: "SHM_STAT", 14: "SHM_INFO", 15: "SHM_STAT_ANY"},
    "sem": {0: "IPC_RMID", 1: "IPC_SET", 2: "IPC_STAT", 3: "IPC_INFO", 11: "GETPID", 12: "GETVAL"}
    | {13: "GETALL", 14: "GETNCNT", 15: "GETZCNT", 16: "SETVAL", 17: "SETALL", 18: "SEM_STAT"}
    | {19: "SEM_INFO", 20: "SEM_STAT_ANY"},
    "msg": {0: "IPC_RMID", 1: "IPC_SET", 2: "IPC_STAT", 3: "IPC_INFO", 11: "MSG_STAT", 12: "MSG_INFO"}
    | {13: "MSG_STAT_ANY"},
}
_FLAG_NAMES = (
    (0o1000, "IPC_CREAT"),
    (0o2000, "IPC_EXCL"),
    (0o4000, "IPC_NOWAIT"),
    (SHM_RDONLY, "SHM_RDONLY"),
    (SHM_RND, "SHM_RND"),
    (SHM_REMAP, "SHM_REMAP"),
    (SHM_EXEC, "SHM_EXEC"),
)


def _fail(err: int) -> SyscallError:
    return SyscallError(err)


def _ns(p: GuestProcess) -> IpcNamespace:
    return p.kernel.ipc


def _who(p: GuestProcess) -> Credentials:
    return Credentials(p.pid, p.euid, p.egid)


# ---------------------------------------------------------------- strace


def _key_text(key: int) -> str:
    return "IPC_PRIVATE" if key == IPC_PRIVATE else f"{key & 0xFFFFFFFF:#x}"


def _flags_text(flags: int, names: tuple[tuple[int, str], ...] = _FLAG_NAMES[:3]) -> str:
    parts = [name for bit, name in names if flags & bit]
    rest = flags & ~sum(bit for bit, _ in names) & ~0o777
    if rest:
        parts.append(f"0{rest:o}")
    if flags & 0o777 or not parts:
        parts.append(f"0{flags & 0o777:o}" if flags & 0o777 else "0")
    return "|".join(parts)


def _cmd_text(kind: str, cmd: int) -> str:
    return _CMDS[kind].get(cmd, str(cmd))


def _trace(p: GuestProcess, text: str) -> None:
    if p.strace is not None:
        p.trace_args = text


# ---------------------------------------------------------- guest structures


def _perm(obj: IpcObject) -> bytes:
    return _PERM.pack(obj.key, obj.uid, obj.gid, obj.cuid, obj.cgid, obj.mode, obj.seq & 0xFFFF)


def _read_perm(p: GuestProcess, buf: int, size: int) -> tuple[int, int, int]:
    """The uid, gid and mode an ``IPC_SET`` asks for (its whole ``*id_ds`` is read)."""
    raw = p.mm.read(buf, size)
    _key, uid, gid, _cuid, _cgid, mode, _seq = _PERM.unpack(raw[: _PERM.size])
    return uid, gid, mode


def _stat(p: GuestProcess, ids: IpcIds, ident: int, cmd: int, stat_cmds: tuple[int, int]) -> tuple[IpcObject, int]:
    """The object ``IPC_STAT`` or ``*_STAT``/``*_STAT_ANY`` names, and the call's result."""
    if cmd in stat_cmds:
        obj = ids.at_index(ident)
        if cmd == stat_cmds[0]:
            obj.check(_who(p), 0o444)
        return obj, obj.id
    obj = ids.get(ident)
    obj.check(_who(p), 0o444)
    return obj, 0


# ---------------------------------------------------------- shared memory


@syscall("shmget")
def sys_shmget(p: GuestProcess, key: int, size: int, flags: int, *_: int) -> int:
    _trace(p, f"{_key_text(s32(key))}, {size}, {_flags_text(s32(flags))}")
    return _ns(p).shmget(s32(key), size, s32(flags), _who(p))


@syscall("shmat")
def sys_shmat(p: GuestProcess, shmid: int, addr: int, flags: int, *_: int) -> int:
    sid, flg = s32(shmid), s32(flags)
    _trace(p, f"{sid}, {'NULL' if addr == 0 else hex(addr)}, {_flags_text(flg & ~0o777, _FLAG_NAMES[3:])}")
    if sid < 0:
        raise _fail(errno.EINVAL)
    fixed = False
    if addr:
        if addr & (SHMLBA - 1):
            if not flg & SHM_RND:
                raise _fail(errno.EINVAL)
            addr &= ~(SHMLBA - 1)
            if addr == 0 and flg & SHM_REMAP:
                raise _fail(errno.EINVAL)
        fixed = True
    elif flg & SHM_REMAP:
        raise _fail(errno.EINVAL)
    prot, access = (PROT_READ, 0o444) if flg & SHM_RDONLY else (PROT_READ | PROT_WRITE, 0o666)
    if flg & SHM_EXEC:
        prot, access = prot | PROT_EXEC, access | 0o111
    seg = _ns(p).segment(sid)
    seg.check(_who(p), access)
    backing = seg.backing
    assert backing is not None
    size = page_up(seg.size)
    mm, lay = p.mm, p.layout
    if fixed:
        if addr + size < addr:
            raise _fail(errno.EINVAL)
        # Linux's order: an overlap with a mapping (EINVAL), then what mmap says of the range
        # (EPERM below mmap_min_addr, ENOMEM beyond the user range, where the stub pages are).
        if not flg & SHM_REMAP and mm.any_mapped(addr, addr + size):
            raise _fail(errno.EINVAL)
        if addr < lay.mmap_min:
            raise _fail(errno.EPERM)
        if not lay.user_range_ok(addr, addr + size):
            raise _fail(errno.ENOMEM)
        start = addr
    else:
        start = mm.find_gap(size)
    mm.map_backing(start, size, prot, backing, 0, shared=True, name=seg.name)
    seg.atime, seg.lpid = int(time.time()), p.pid
    return start


@syscall("shmdt")
def sys_shmdt(p: GuestProcess, addr: int, *_: int) -> int:
    if addr & PAGE_MASK:
        raise _fail(errno.EINVAL)
    found: ShmBacking | None = None
    size = 0
    for v in [v for v in p.mm.vmas if v.end > addr]:
        b = v.backing
        if not isinstance(b, ShmBacking) or v.start - addr != v.offset:
            continue
        if found is None:
            found, size = b, page_up(b.segment.size)
        elif b is not found or v.end - addr > size:
            continue
        p.mm.unmap(v.start, v.end)
    if found is None:
        raise _fail(errno.EINVAL)
    found.segment.lpid = p.pid
    return 0


@syscall("shmctl")
def sys_shmctl(p: GuestProcess, shmid: int, cmd: int, buf: int, *_: int) -> int:
    sid, c = s32(shmid), s32(cmd)
    _trace(p, f"{sid}, {_cmd_text('shm', c)}, {'NULL' if buf == 0 else hex(buf)}")
    if sid < 0 or c < 0:
        raise _fail(errno.EINVAL)
    ns, who = _ns(p), _who(p)
    if c == IPC_INFO:
        p.mm.write(buf, _SHMINFO.pack(SHMMAX, SHMMIN, SHMMNI, SHMSEG, SHMALL))
        return ns.shm.max_index
    if c == SHM_INFO:
        segs = [o for o in ns.shm.objs.values() if isinstance(o, ShmSegment)]
        pages = sum(page_up(s.size) // PAGE_SIZE for s in segs)
        p.mm.write(buf, _SHM_INFO.pack(len(segs), pages, pages, 0, 0, 0))
        return ns.shm.max_index
    if c in (IPC_STAT, SHM_STAT, SHM_STAT_ANY):
        obj, result = _stat(p, ns.shm, sid, c, (SHM_STAT, SHM_STAT_ANY))
        assert isinstance(obj, ShmSegment)
        p.mm.write(
            buf,
            _SHMID_DS.pack(_perm(obj), obj.size, obj.atime, obj.dtime, obj.ctime, obj.cpid, obj.lpid, obj.nattch),
        )
        return result
    if c == IPC_SET:
        uid, gid, mode = _read_perm(p, buf, _SHMID_DS.size)
        seg = ns.segment(sid)
        seg.check_owner(who)
        seg.set_perm(uid, gid, mode)
        return 0
    if c == IPC_RMID:
        ns.shm_rmid(ns.segment(sid), who)
        return 0
    if c in (SHM_LOCK, SHM_UNLOCK):
        seg = ns.segment(sid)
        seg.check_owner(who)
        seg.mode = seg.mode | SHM_LOCKED if c == SHM_LOCK else seg.mode & ~SHM_LOCKED
        return 0
    raise _fail(errno.EINVAL)


# -------------------------------------------------------------- semaphores


@syscall("semget")
def sys_semget(p: GuestProcess, key: int, nsems: int, flags: int, *_: int) -> int:
    _trace(p, f"{_key_text(s32(key))}, {s32(nsems)}, {_flags_text(s32(flags))}")
    return _ns(p).semget(s32(key), s32(nsems), s32(flags), _who(p))


@syscall("semop")
def sys_semop(p: GuestProcess, semid: int, sops: int, nsops: int, *_: int) -> int | Awaitable[int]:
    return _semop(p, semid, sops, nsops, 0, timed=False)


@syscall("semtimedop")
def sys_semtimedop(p: GuestProcess, semid: int, sops: int, nsops: int, timeout: int, *_: int) -> int | Awaitable[int]:
    return _semop(p, semid, sops, nsops, timeout, timed=True)


def _semop(p: GuestProcess, semid: int, sops: int, nsops: int, timeout: int, *, timed: bool) -> int | Awaitable[int]:
    sid = s32(semid)
    shown = f", {timeout:#x}" if timeout else ", NULL"
    _trace(p, f"{sid}, {_sops_text(p, sops, nsops)}, {nsops}" + (shown if timed else ""))
    if nsops < 1:
        raise _fail(errno.EINVAL)
    if nsops > SEMOPM:
        raise _fail(errno.E2BIG)
    raw = p.mm.read(sops, nsops * _SEMBUF.size)
    ops = [(num, op, flg) for num, op, flg in _SEMBUF.iter_unpack(raw)]
    wait: float | None = None
    if timeout:
        sec, nsec = _TIMESPEC.unpack(p.mm.read(timeout, _TIMESPEC.size))
        if sec < 0 or not 0 <= nsec < 1_000_000_000:
            raise _fail(errno.EINVAL)
        wait = sec + nsec / 1e9
    if sid < 0:
        raise _fail(errno.EINVAL)
    ns = _ns(p)
    sem = ns.semset(sid)
    if max(num for num, _, _ in ops) >= len(sem.values):
        raise _fail(errno.EFBIG)
    sem.check(_who(p), 0o222 if any(op for _, op, _ in ops) else 0o444)
    sleeper = ns.semop(sem, ops, _who(p))
    if sleeper is None:
        return 0
    return sleeper.wait(wait)


def _sops_text(p: GuestProcess, sops: int, nsops: int) -> str:
    if p.strace is None or not 0 < nsops <= 8:
        return hex(sops)
    try:
        raw = p.mm.read(sops, nsops * _SEMBUF.size)
    except SyscallError:
        return hex(sops)
    items = []
    for num, op, flg in _SEMBUF.iter_unpack(raw):
        names = "|".join(n for bit, n in ((IPC_NOWAIT, "IPC_NOWAIT"), (SEM_UNDO, "SEM_UNDO")) if flg & bit)
        items.append(f"{{{num}, {op}, {names or flg}}}")
    return "[" + ", ".join(items) + "]"


@syscall("semctl")
def sys_semctl(p: GuestProcess, semid: int, semnum: int, cmd: int, arg: int, *_: int) -> int:
    sid, num, c = s32(semid), s32(semnum), s32(cmd)
    _trace(p, f"{sid}, {num}, {_cmd_text('sem', c)}, {arg:#x}")
    if sid < 0:
        raise _fail(errno.EINVAL)
    ns, who = _ns(p), _who(p)
    if c in (IPC_INFO, SEM_INFO):
        sets = [o for o in ns.sem.objs.values() if isinstance(o, SemSet)]
        if c == IPC_INFO:
            info = (SEMMNS, SEMMNI, SEMMNS, SEMMNS, SEMMSL, SEMOPM, SEMOPM, 20, SEMVMX, SEMAEM)
        else:
            used = sum(len(s.values) for s in sets)
            info = (SEMMNS, SEMMNI, SEMMNS, SEMMNS, SEMMSL, SEMOPM, SEMOPM, len(sets), SEMVMX, used)
        p.mm.write(arg, _SEMINFO.pack(*info))
        return ns.sem.max_index
    if c in (IPC_STAT, SEM_STAT, SEM_STAT_ANY):
        obj, result = _stat(p, ns.sem, sid, c, (SEM_STAT, SEM_STAT_ANY))
        assert isinstance(obj, SemSet)
        p.mm.write(arg, _SEMID_DS.pack(_perm(obj), obj.otime, obj.ctime, len(obj.values)))
        return result
    if c in (GETALL, GETVAL, GETPID, GETNCNT, GETZCNT, SETALL):
        sem = ns.semset(sid)
        nsems = len(sem.values)
        sem.check(who, 0o222 if c == SETALL else 0o444)
        if c == GETALL:
            p.mm.write(arg, struct.pack(f"<{nsems}H", *sem.values))
            return 0
        if c == SETALL:
            values = struct.unpack(f"<{nsems}H", p.mm.read(arg, 2 * nsems))
            if any(v > SEMVMX for v in values):
                raise _fail(errno.ERANGE)
            ns.setval(sem, range(nsems), values, who)
            return 0
        if not 0 <= num < nsems:
            raise _fail(errno.EINVAL)
        if c == GETVAL:
            return sem.values[num]
        if c == GETPID:
            return sem.pids[num]
        return sem.count_waiting(num, c == GETZCNT)
    if c == SETVAL:
        val = s32(arg)
        if not 0 <= val <= SEMVMX:
            raise _fail(errno.ERANGE)
        sem = ns.semset(sid)
        if not 0 <= num < len(sem.values):
            raise _fail(errno.EINVAL)
        sem.check(who, 0o222)
        ns.setval(sem, [num], [val], who)
        return 0
    if c == IPC_SET:
        uid, gid, mode = _read_perm(p, arg, _SEMID_DS.size)
        sem = ns.semset(sid)
        sem.check_owner(who)
        sem.set_perm(uid, gid, mode)
        return 0
    if c == IPC_RMID:
        ns.sem_rmid(ns.semset(sid), who)
        return 0
    raise _fail(errno.EINVAL)


# ---------------------------------------------------------- message queues


@syscall("msgget")
def sys_msgget(p: GuestProcess, key: int, flags: int, *_: int) -> int:
    _trace(p, f"{_key_text(s32(key))}, {_flags_text(s32(flags))}")
    return _ns(p).msgget(s32(key), s32(flags), _who(p))


@syscall("msgsnd")
def sys_msgsnd(p: GuestProcess, msqid: int, msgp: int, msgsz: int, flags: int, *_: int) -> int | Awaitable[int]:
    qid, flg, size = s32(msqid), s32(flags), s64(msgsz)
    _trace(p, f"{qid}, {msgp:#x}, {size}, {_flags_text(flg & ~0o777, _FLAG_NAMES[2:3])}")
    (mtype,) = _LONG.unpack(p.mm.read(msgp, _LONG.size))
    if size > MSGMAX or size < 0 or qid < 0:
        raise _fail(errno.EINVAL)
    if mtype < 1:
        raise _fail(errno.EINVAL)
    text = p.mm.read(msgp + _LONG.size, size) if size else b""
    ns, who = _ns(p), _who(p)
    q = ns.queue(qid)
    q.check(who, 0o222)
    if ns.msgsnd(q, mtype, text, who):
        return 0
    if flg & IPC_NOWAIT:
        raise _fail(errno.EAGAIN)
    return _msgsnd_wait(p, ns, q, mtype, text)


async def _msgsnd_wait(p: GuestProcess, ns: IpcNamespace, q: MsgQueue, mtype: int, text: bytes) -> int:
    # This runs only once the guest's task takes the call over, after the handler found the
    # queue full: other guests' calls answered meanwhile may have made room, and a receive
    # wakes only the senders already waiting.  So every sleep follows a try, with no await
    # between them.
    who = _who(p)
    while True:
        q = ns.queue(q.id)  # EIDRM came through the sleeper; a new queue has a new id
        q.check(who, 0o222)
        if ns.msgsnd(q, mtype, text, who):
            return 0
        await ns.wait_room(q).wait()


@syscall("msgrcv")
def sys_msgrcv(
    p: GuestProcess, msqid: int, msgp: int, msgsz: int, msgtyp: int, flags: int, *_: int
) -> int | Awaitable[int]:
    qid, flg, size, want = s32(msqid), s32(flags), s64(msgsz), s64(msgtyp)
    names = (*_FLAG_NAMES[2:3], (0o10000, "MSG_NOERROR"), (MSG_EXCEPT, "MSG_EXCEPT"), (MSG_COPY, "MSG_COPY"))
    _trace(p, f"{qid}, {msgp:#x}, {size}, {want}, {_flags_text(flg & ~0o777, names)}")
    if size < 0 or qid < 0:
        raise _fail(errno.EINVAL)
    if flg & MSG_COPY:
        # Copying a message by position belongs to checkpoint/restore (off in most kernels).
        raise _fail(errno.ENOSYS)
    ns, who = _ns(p), _who(p)
    q = ns.queue(qid)
    q.check(who, 0o444)
    # The message is taken before it is stored, as Linux does: a bad buffer loses it.
    got = ns.msgrcv(q, want, size, flg, who)
    if got is not None:
        return _store(p, msgp, got)
    if flg & IPC_NOWAIT:
        raise _fail(errno.ENOMSG)
    return _msgrcv_wait(p, ns, q, want, size, flg, msgp)


async def _msgrcv_wait(
    p: GuestProcess, ns: IpcNamespace, q: MsgQueue, want: int, size: int, flg: int, msgp: int
) -> int:
    # As in _msgsnd_wait: a message sent since the handler looked went into the queue, as
    # nobody waited for it yet; it is taken now, and only a receive that finds none sleeps.
    who = _who(p)
    q = ns.queue(q.id)
    q.check(who, 0o444)
    got = ns.msgrcv(q, want, size, flg, who)
    if got is None:
        r = ns.wait_message(q, want, size, flg, who)
        await r.sleeper.wait()
        assert r.message is not None
        got = r.message
    return _store(p, msgp, got)


def _store(p: GuestProcess, msgp: int, message: tuple[int, bytes]) -> int:
    mtype, text = message
    p.mm.write(msgp, _LONG.pack(mtype) + text)
    return len(text)


@syscall("msgctl")
def sys_msgctl(p: GuestProcess, msqid: int, cmd: int, buf: int, *_: int) -> int:
    qid, c = s32(msqid), s32(cmd)
    _trace(p, f"{qid}, {_cmd_text('msg', c)}, {'NULL' if buf == 0 else hex(buf)}")
    if qid < 0 or c < 0:
        raise _fail(errno.EINVAL)
    ns, who = _ns(p), _who(p)
    if c in (IPC_INFO, MSG_INFO):
        queues = [o for o in ns.msg.objs.values() if isinstance(o, MsgQueue)]
        if c == IPC_INFO:
            info = (MSGPOOL, MSGMAP, MSGMAX, MSGMNB, ns.msg.limit, MSGSSZ, MSGTQL, MSGSEG)
        else:
            msgs = sum(len(q.messages) for q in queues)
            used = sum(q.cbytes for q in queues)
            info = (len(queues), msgs, MSGMAX, MSGMNB, ns.msg.limit, MSGSSZ, used, MSGSEG)
        p.mm.write(buf, _MSGINFO.pack(*info))
        return ns.msg.max_index
    if c in (IPC_STAT, MSG_STAT, MSG_STAT_ANY):
        obj, result = _stat(p, ns.msg, qid, c, (MSG_STAT, MSG_STAT_ANY))
        assert isinstance(obj, MsgQueue)
        p.mm.write(
            buf,
            _MSQID_DS.pack(
                _perm(obj),
                obj.stime,
                obj.rtime,
                obj.ctime,
                obj.cbytes,
                len(obj.messages),
                obj.qbytes,
                obj.lspid,
                obj.lrpid,
            ),
        )
        return result
    if c == IPC_SET:
        uid, gid, mode = _read_perm(p, buf, _MSQID_DS.size)
        qbytes = _MSQID_DS.unpack(p.mm.read(buf, _MSQID_DS.size))[6]
        q = ns.queue(qid)
        q.check_owner(who)
        if qbytes > MSGMNB and who.euid != 0:
            raise _fail(errno.EPERM)
        q.set_perm(uid, gid, mode)
        q.qbytes = qbytes
        q.wake_senders()
        return 0
    if c == IPC_RMID:
        ns.msg_rmid(ns.queue(qid), who)
        return 0
    raise _fail(errno.EINVAL)

"""x86-64 syscall numbers and how ``--strace`` shows each call's arguments.

``NAMES`` maps every x86-64 syscall number to its name (for messages about
unsupported calls too).  ``ARGS`` says, for the calls strace output cares about,
how to show each argument; a call without an entry shows its raw registers in hex.

Argument kinds:

====== ==========================================================
``d``  signed decimal (64-bit)
``i``  signed decimal (32-bit: descriptors, pids, signal numbers as ints)
``u``  unsigned decimal
``x``  hex
``p``  pointer (``NULL`` or hex)
``F``  directory descriptor (``AT_FDCWD`` by name)
``s``  NUL-terminated string read from the guest (a path)
``b``  input buffer; its length is the next argument
``B``  output buffer; its length is the call's result (shown after the call)
``o``  ``open`` flags
``m``  octal mode
``P``  ``PROT_*`` bits
``M``  ``MAP_*`` flags
``S``  signal number
``w``  ``lseek`` whence
``c``  clock id
``a``  ``arch_prctl`` code
``r``  resource (``RLIMIT_*``)
``t``  ``AT_*`` flags
``f``  ``O_*`` flags without an access mode (``pipe2``, ``dup3``)
``A``  a NULL-terminated array of strings (``argv``)
``E``  a NULL-terminated array shown by its length (``envp``)
``W``  an output ``int`` wait status (shown after a successful call)
``H``  ``wait4``/``waitid`` options
``I``  ``waitid`` id type
``Y``  the output pair of descriptors of ``pipe``/``pipe2``/``socketpair``
``k``  an input socket address; its length is the next argument
``K``  an output socket address; the next argument points to its length (shown after the call)
``l``  an output ``socklen_t`` (shown after the call as ``[n]``)
``D``  a socket domain (``AF_*``)
``T``  a socket type and its flags (``SOCK_STREAM|SOCK_CLOEXEC``)
``n``  ``SOCK_*`` flags alone (``accept4``)
``g``  ``MSG_*`` flags
``h``  ``shutdown``'s how
``L``  a socket option level (``SOL_SOCKET``, ``IPPROTO_TCP``...)
====== ==========================================================

``clone`` has a format of its own (named arguments, as strace shows it).
"""

from __future__ import annotations

__all__ = ["ARGS", "HEX_RESULT", "NAMES", "NUMBERS"]


def _words(text: str) -> list[str]:
    return text.split()


_NAMES_0_TO_334 = _words(
    """
read write open close stat fstat lstat poll lseek mmap mprotect munmap brk rt_sigaction
rt_sigprocmask rt_sigreturn ioctl pread64 pwrite64 readv writev access pipe select
sched_yield mremap msync mincore madvise shmget shmat shmctl dup dup2 pause nanosleep
getitimer alarm setitimer getpid sendfile socket connect accept sendto recvfrom sendmsg
recvmsg shutdown bind listen getsockname getpeername socketpair setsockopt getsockopt
clone fork vfork execve exit wait4 kill uname semget semop semctl shmdt msgget msgsnd
msgrcv msgctl fcntl flock fsync fdatasync truncate ftruncate getdents getcwd chdir
fchdir rename mkdir rmdir creat link unlink symlink readlink chmod fchmod chown fchown
lchown umask gettimeofday getrlimit getrusage sysinfo times ptrace getuid syslog getgid
setuid setgid geteuid getegid setpgid getppid getpgrp setsid setreuid setregid getgroups
setgroups setresuid getresuid setresgid getresgid getpgid setfsuid setfsgid getsid
capget capset rt_sigpending rt_sigtimedwait rt_sigqueueinfo rt_sigsuspend sigaltstack
utime mknod uselib personality ustat statfs fstatfs sysfs getpriority setpriority
sched_setparam sched_getparam sched_setscheduler sched_getscheduler
sched_get_priority_max sched_get_priority_min sched_rr_get_interval mlock munlock
mlockall munlockall vhangup modify_ldt pivot_root _sysctl prctl arch_prctl adjtimex
setrlimit chroot sync acct settimeofday mount umount2 swapon swapoff reboot sethostname
setdomainname iopl ioperm create_module init_module delete_module get_kernel_syms
query_module quotactl nfsservctl getpmsg putpmsg afs_syscall tuxcall security gettid
readahead setxattr lsetxattr fsetxattr getxattr lgetxattr fgetxattr listxattr llistxattr
flistxattr removexattr lremovexattr fremovexattr tkill time futex sched_setaffinity
sched_getaffinity set_thread_area io_setup io_destroy io_getevents io_submit io_cancel
get_thread_area lookup_dcookie epoll_create epoll_ctl_old epoll_wait_old
remap_file_pages getdents64 set_tid_address restart_syscall semtimedop fadvise64
timer_create timer_settime timer_gettime timer_getoverrun timer_delete clock_settime
clock_gettime clock_getres clock_nanosleep exit_group epoll_wait epoll_ctl tgkill utimes
vserver mbind set_mempolicy get_mempolicy mq_open mq_unlink mq_timedsend mq_timedreceive
mq_notify mq_getsetattr kexec_load waitid add_key request_key keyctl ioprio_set
ioprio_get inotify_init inotify_add_watch inotify_rm_watch migrate_pages openat mkdirat
mknodat fchownat futimesat newfstatat unlinkat renameat linkat symlinkat readlinkat
fchmodat faccessat pselect6 ppoll unshare set_robust_list get_robust_list splice tee
sync_file_range vmsplice move_pages utimensat epoll_pwait signalfd timerfd_create
eventfd fallocate timerfd_settime timerfd_gettime accept4 signalfd4 eventfd2
epoll_create1 dup3 pipe2 inotify_init1 preadv pwritev rt_tgsigqueueinfo perf_event_open
recvmmsg fanotify_init fanotify_mark prlimit64 name_to_handle_at open_by_handle_at
clock_adjtime syncfs sendmmsg setns getcpu process_vm_readv process_vm_writev kcmp
finit_module sched_setattr sched_getattr renameat2 seccomp getrandom memfd_create
kexec_file_load bpf execveat userfaultfd membarrier mlock2 copy_file_range preadv2
pwritev2 pkey_mprotect pkey_alloc pkey_free statx io_pgetevents rseq
"""
)

_NAMES_424_UP = _words(
    """
pidfd_send_signal io_uring_setup io_uring_enter io_uring_register open_tree move_mount
fsopen fsconfig fsmount fspick pidfd_open clone3 close_range openat2 pidfd_getfd
faccessat2 process_madvise epoll_pwait2 mount_setattr quotactl_fd
landlock_create_ruleset landlock_add_rule landlock_restrict_self memfd_secret
process_mrelease futex_waitv set_mempolicy_home_node cachestat fchmodat2
map_shadow_stack futex_wake futex_wait futex_requeue statmount listmount
lsm_get_self_attr lsm_set_self_attr lsm_list_modules mseal
"""
)

NAMES: dict[int, str] = dict(enumerate(_NAMES_0_TO_334))
NAMES.update({424 + i: name for i, name in enumerate(_NAMES_424_UP)})
NAMES[335] = "uretprobe"
NUMBERS: dict[str, int] = {name: nr for nr, name in NAMES.items()}

#: Argument kinds by syscall name (see the module docstring).
ARGS: dict[str, str] = {
    "read": "iBu",
    "write": "ibu",
    "open": "som",
    "close": "i",
    "stat": "sp",
    "fstat": "ip",
    "lstat": "sp",
    "poll": "pui",
    "select": "ipppp",
    "pselect6": "ippppp",
    "lseek": "idw",
    "mmap": "puPMid",
    "mprotect": "puP",
    "munmap": "pu",
    "brk": "p",
    "rt_sigaction": "Sppu",
    "rt_sigprocmask": "ippu",
    "rt_sigreturn": "",
    "rt_sigqueueinfo": "iSp",
    "rt_tgsigqueueinfo": "iiSp",
    "rt_sigtimedwait": "pppu",
    "restart_syscall": "",
    "signalfd": "ipu",
    "signalfd4": "ipuf",
    "ioctl": "ixp",
    "pread64": "iBud",
    "pwrite64": "ibud",
    "readv": "ipi",
    "writev": "ipi",
    "access": "so",
    "pipe": "Y",
    "sched_yield": "",
    "mremap": "puuxp",
    "madvise": "pui",
    "msync": "pux",
    "sched_get_priority_max": "i",
    "sched_get_priority_min": "i",
    "sched_getscheduler": "i",
    "sched_getparam": "ip",
    "mlock": "pu",
    "mlock2": "pux",
    "munlock": "pu",
    "mlockall": "x",
    "munlockall": "",
    "dup": "i",
    "dup2": "ii",
    "pause": "",
    "nanosleep": "pp",
    "getpid": "",
    "sendfile": "iipu",
    "exit": "i",
    "wait4": "iWHp",
    "kill": "iS",
    "uname": "p",
    "fcntl": "iix",
    "flock": "ix",
    "fsync": "i",
    "fdatasync": "i",
    "truncate": "sd",
    "ftruncate": "id",
    "getcwd": "pu",
    "chdir": "s",
    "fchdir": "i",
    "rename": "ss",
    "mkdir": "sm",
    "rmdir": "s",
    "creat": "sm",
    "link": "ss",
    "unlink": "s",
    "symlink": "ss",
    "readlink": "sBu",
    "chmod": "sm",
    "fchmod": "im",
    "umask": "m",
    "gettimeofday": "pp",
    "getrlimit": "rp",
    "getrusage": "ip",
    "sysinfo": "p",
    "times": "p",
    "getuid": "",
    "getgid": "",
    "geteuid": "",
    "getegid": "",
    "getppid": "",
    "getpgrp": "",
    "setpgid": "ii",
    "setsid": "",
    "getpgid": "i",
    "getsid": "i",
    "sigaltstack": "pp",
    "prctl": "ixxxx",
    "arch_prctl": "ax",
    "setrlimit": "rp",
    "gettid": "",
    "tkill": "iS",
    "time": "p",
    "futex": "pixpxx",
    "getdents64": "ipu",
    "set_tid_address": "p",
    "clock_gettime": "cp",
    "clock_getres": "cp",
    "clock_nanosleep": "cxpp",
    "exit_group": "i",
    "tgkill": "iiS",
    "openat": "Fsom",
    "mkdirat": "Fsm",
    "newfstatat": "Fspt",
    "unlinkat": "Fst",
    "renameat": "FsFs",
    "linkat": "FsFst",
    "symlinkat": "sFs",
    "readlinkat": "FsBu",
    "fchmodat": "Fsm",
    "faccessat": "Fso",
    "faccessat2": "Fsot",
    "set_robust_list": "pu",
    "dup3": "iif",
    "pipe2": "Yf",
    "prlimit64": "irpp",
    "getrandom": "Bux",
    "statx": "Fstxp",
    "rseq": "puxx",
    "renameat2": "FsFsx",
    "utimensat": "Fspt",
    "fchownat": "Fsiit",
    "close_range": "iix",
    "sched_getaffinity": "iup",
    "getcpu": "ppp",
    "fadvise64": "iddi",
    "sync": "",
    "fork": "",
    "vfork": "",
    "execve": "sAE",
    "execveat": "FsAEt",
    "waitid": "IipHp",
    "mknodat": "Fsmx",
    "mknod": "smx",
    "chown": "sii",
    "lchown": "sii",
    "fchown": "iii",
    "fallocate": "iidd",
    "statfs": "sp",
    "fstatfs": "ip",
    "chroot": "s",
    "personality": "x",
    "getpriority": "ii",
    "setpriority": "iii",
    "ioprio_get": "ii",
    "ioprio_set": "iix",
    "sched_setaffinity": "iup",
    "unshare": "x",
    "utimes": "sp",
    "utime": "sp",
    "futimesat": "Fsp",
    "syncfs": "i",
    "socket": "DTi",
    "socketpair": "DTiY",
    "bind": "iki",
    "connect": "iki",
    "listen": "ii",
    "accept": "iKl",
    "accept4": "iKln",
    "getsockname": "iKl",
    "getpeername": "iKl",
    "sendto": "ibugki",
    "recvfrom": "iBugKl",
    "sendmsg": "ipg",
    "recvmsg": "ipg",
    "sendmmsg": "ipug",
    "recvmmsg": "ipugp",
    "shutdown": "ih",
    "setsockopt": "iLipi",
    "getsockopt": "iLipp",
}

#: Calls whose result is an address, shown in hex.
HEX_RESULT = frozenset({"mmap", "mremap", "brk", "shmat"})

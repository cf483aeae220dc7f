/*
 * _native.c - the controller's native helpers, compiled by cffi.
 *
 * Only what Python cannot do itself, or not cheaply: the release store plus
 * FUTEX_WAKE that hands a stub data page back, the acquire load that reads
 * the handoff word, mapping the data memfd in the controller, and queueing a
 * record into a batch (a few hundred nanoseconds here against several
 * microseconds of Python objects, struct packing and fcntl calls per record).
 */
#define _GNU_SOURCE
#include <cpuid.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <linux/futex.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "stub_src/stub_abi.h"

/* Why aioumm_read_report refused a report (it returns a negative number otherwise). */
enum {
	AIOUMM_REPORT_BAD_SIGNAL = 1,
	AIOUMM_REPORT_BAD_SIGINFO = 2,
	AIOUMM_REPORT_BAD_UCONTEXT = 3,
	AIOUMM_REPORT_SIGNO_MISMATCH = 4,
};

/* How aioumm_spin_for_report ended. */
enum {
	AIOUMM_SPUN_TIMEOUT = 0,	/* no report within the budget */
	AIOUMM_SPUN_REPORT = 1,		/* the stub handed its page over */
	AIOUMM_SPUN_NOT_HERE = 2,	/* not spun: the stub ran on this CPU, or cannot tell */
	AIOUMM_SPUN_NOT_RUNNING = 3,	/* not spun: the word has a value no state has */
	AIOUMM_SPUN_ALREADY = 4,	/* not spun: the word already says the controller owns the page */
};

/* The most notifications one pass takes (Notifications.PASS). */
#define AIOUMM_PASS_MAX 256

/* What aioumm_read_report copies out of a validated report. */
struct aioumm_report {
	/* What a Report holds, in its order (read by Python in one unpack). */
	int64_t signal, code, errno_;
	uint64_t addr;
	int64_t syscall;
	uint64_t arch;
	int64_t pid;
	/* For the checks' messages and the register views. */
	int64_t si_signo;
	uint64_t siginfo_addr, ucontext_addr, frame_offset;
};

/*
 * A batch being filled (aioumm/batch.py): its records in their wire format,
 * how many queued calls were merged into each, and its FD map.  The array
 * sizes are written out for cffi's cdef, and checked against the ABI below.
 */
struct aioumm_batch {
	uint32_t len;			/* records[0..len) are queued */
	uint32_t nfds;			/* slots in use */
	int32_t fds[4];			/* the caller's descriptor numbers, by slot */
	int32_t dups[4];		/* our duplicates of them, by slot: what is sent */
	uint32_t calls[256];
	struct stub_record records[256];
};

/*
 * Who owns the page: SLEEPING is CONTROLLER for every caller (the stub also
 * sleeps), so it reads as CONTROLLER; any other value is returned as it is.
 */
static uint32_t aioumm_load_handoff(const struct stub_data *d)
{
	uint32_t word = __atomic_load_n(&d->handoff, __ATOMIC_ACQUIRE);

	return word == STUB_HANDOFF_SLEEPING ? STUB_HANDOFF_CONTROLLER : word;
}

/*
 * The CPU the calling thread runs on: the number a stub reads from TSC_AUX
 * (getcpu gives the same, through the vDSO, on every CPU).
 */
static uint32_t current_cpu(void)
{
	int cpu = sched_getcpu();

	return cpu < 0 ? STUB_CPU_UNKNOWN : (uint32_t)cpu;
}

/* Whether the CPU has RDTSCP (CPUID 0x80000001, EDX bit 27): see STUB_INIT_RDTSCP. */
static int aioumm_has_rdtscp(void)
{
	unsigned int eax, ebx, ecx, edx;

	if (!__get_cpuid(0x80000001, &eax, &ebx, &ecx, &edx))
		return 0;
	return (edx >> 27) & 1;
}

/* What a hand-back writes before the word: the command and the stub's spin for next time. */
static void prepare_hand_back(struct stub_data *d, uint32_t command, uint32_t spin_limit)
{
	d->command = command;
	d->spin_limit = spin_limit;
	d->controller_cpu = current_cpu();
}

/*
 * Give the page back: the command and everything else written to the page
 * happen before the word becomes CHILD (an exchange, release and acquire).
 * Returns whether the stub must be woken: the word said SLEEPING.  A stub
 * that had not said so is still spinning, or its swap to SLEEPING fails on
 * CHILD: both atomic operations are on one word, so exactly one of the two
 * sides sees the other (see hand_over_and_wait in stub_code.c).
 */
static int hand_back(struct stub_data *d, uint32_t command, uint32_t spin_limit)
{
	prepare_hand_back(d, command, spin_limit);
	return __atomic_exchange_n(&d->handoff, STUB_HANDOFF_CHILD, __ATOMIC_ACQ_REL) ==
	       STUB_HANDOFF_SLEEPING;
}

static int wake(struct stub_data *d)
{
	return syscall(SYS_futex, &d->handoff, FUTEX_WAKE, 1, NULL, NULL, 0) < 0 ? -errno : 0;
}

/* Hand the page back, and wake the stub if it sleeps.  Returns 1 if it woke it, 0, or -errno. */
static int aioumm_hand_back(struct stub_data *d, uint32_t command, uint32_t spin_limit)
{
	int res;

	if (!hand_back(d, command, spin_limit))
		return 0;
	res = wake(d);
	return res < 0 ? res : 1;
}

/*
 * Validate the report in the data page and copy what Python needs out of it.
 * Guest code can write the page, so every address is checked before it is
 * followed.  Returns the first check that failed, or (it is what the caller
 * needs next) minus the frame's offset in the page, which is never 0, with
 * bit 0 set when the Report's fields are the very ones this call found in *r
 * (a guest in a loop makes the same call from the same place, report after
 * report: the caller may reuse the Report it made last time).  The offset
 * is a multiple of 8 (the ucontext's address is checked to be), so bit 0 is
 * free.
 */
_Static_assert(offsetof(struct stub_ucontext, mcontext) % 8 == 0, "bit 0 of a frame offset is free");

static int aioumm_read_report(const struct stub_data *d, struct aioumm_report *r)
{
	const uint64_t lo = STUB_DATA_ADDR + STUB_ALTSTACK_OFFSET, hi = STUB_DATA_ADDR + STUB_DATA_SIZE;
	const struct aioumm_report was = *r;
	int same;
	/* Each value the checks rely on is read exactly once: the page may change under us. */
	uint64_t info_addr = __atomic_load_n(&d->siginfo_addr, __ATOMIC_RELAXED);
	uint64_t uc_addr = __atomic_load_n(&d->ucontext_addr, __ATOMIC_RELAXED);
	const struct stub_siginfo *info;
	int sig = __atomic_load_n(&d->signal, __ATOMIC_RELAXED);

	r->signal = sig;
	r->siginfo_addr = info_addr;
	r->ucontext_addr = uc_addr;
	if (sig != SIGSEGV && sig != SIGSYS && sig != SIGALRM && sig != SIGTRAP && sig != SIGILL &&
	    sig != SIGFPE)
		return AIOUMM_REPORT_BAD_SIGNAL;
	if (info_addr < lo || info_addr > hi - sizeof(struct stub_siginfo) || info_addr % 8)
		return AIOUMM_REPORT_BAD_SIGINFO;
	if (uc_addr < lo || uc_addr > hi - sizeof(struct stub_ucontext) || uc_addr % 8)
		return AIOUMM_REPORT_BAD_UCONTEXT;
	info = (const void *)((const char *)d + (info_addr - STUB_DATA_ADDR));
	r->si_signo = __atomic_load_n(&info->si_signo, __ATOMIC_RELAXED);
	if (r->si_signo != sig)
		return AIOUMM_REPORT_SIGNO_MISMATCH;
	r->code = info->si_code;
	r->errno_ = info->si_errno;
	r->addr = 0;
	r->syscall = -1;
	r->arch = 0;
	r->pid = 0;
	if (sig == SIGSYS) {
		r->addr = info->u.sys.call_addr;
		r->syscall = info->u.sys.syscall;
		r->arch = info->u.sys.arch;
	} else if (sig == SIGALRM) {
		r->pid = info->u.kill.pid;
	} else {
		r->addr = info->u.addr;
	}
	r->frame_offset = uc_addr - STUB_DATA_ADDR + offsetof(struct stub_ucontext, mcontext);
	same = r->signal == was.signal && r->code == was.code && r->errno_ == was.errno_ &&
	       r->addr == was.addr && r->syscall == was.syscall && r->arch == was.arch &&
	       r->pid == was.pid;
	return -(int)(r->frame_offset | same);
}

/*
 * The word half of a hand-back: the page is the stub's again, and a stub
 * still spinning sees it at once.  Returns 1 when the stub sleeps and needs
 * the FUTEX_WAKE that aioumm_wake_many makes later (see futex_bridge.py:
 * deferring the wake is safe, the waiter re-checks the word).
 */
static int aioumm_hand_back_later(struct stub_data *d, uint32_t command, uint32_t spin_limit)
{
	return hand_back(d, command, spin_limit);
}

/* FUTEX_WAKE each of n pages' handoff words; returns how many wakes failed. */
static int aioumm_wake_many(struct stub_data **ds, int n)
{
	int failed = 0;

	for (int i = 0; i < n; i++)
		if (syscall(SYS_futex, &ds[i]->handoff, FUTEX_WAKE, 1, NULL, NULL, 0) < 0)
			failed++;
	return failed;
}

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/*
 * Spin up to budget_ns until d's stub, handed its page back, hands it over
 * again: AIOUMM_SPUN_REPORT when it did, AIOUMM_SPUN_TIMEOUT when the time
 * ran out.  At once, without spinning: AIOUMM_SPUN_ALREADY when the word
 * says the controller owns the page (a stub on this CPU runs as soon as it
 * is woken, and has often reported again before the caller looks: a report
 * if the caller knows it handed the page back, else a page still stopped),
 * AIOUMM_SPUN_NOT_RUNNING when the word holds no state at all (guest code
 * wrote it), AIOUMM_SPUN_NOT_HERE when the stub last reported from this CPU
 * (it could not run while we spin here) or could not tell its CPU.  The
 * caller answers a report as if its eventfd had been seen; the eventfd write
 * that follows is a spare notification, which the word's re-check makes
 * harmless (see futex_bridge.py).
 */
static int aioumm_spin_for_report(const struct stub_data *d, int64_t budget_ns)
{
	int64_t deadline;
	uint32_t cpu = __atomic_load_n(&d->report_cpu, __ATOMIC_RELAXED);
	uint32_t word = aioumm_load_handoff(d);

	if (word == STUB_HANDOFF_CONTROLLER)
		return AIOUMM_SPUN_ALREADY;
	if (word != STUB_HANDOFF_CHILD)
		return AIOUMM_SPUN_NOT_RUNNING;
	if (cpu == current_cpu() || cpu == STUB_CPU_UNKNOWN)
		return AIOUMM_SPUN_NOT_HERE;
	deadline = now_ns() + budget_ns;
	for (;;) {
		for (int i = 0; i < 32; i++) {
			if (aioumm_load_handoff(d) == STUB_HANDOFF_CONTROLLER)
				return AIOUMM_SPUN_REPORT;
			__builtin_ia32_pause();
		}
		if (now_ns() >= deadline)
			return AIOUMM_SPUN_TIMEOUT;
	}
}

/*
 * Watch a stub's eventfd in the controller's epoll set, edge-triggered (see
 * futex_bridge.py), the event carrying the controller's address of the
 * stub's page.  The caller keeps the page mapped while the eventfd is in the
 * set: aioumm_take_handovers follows that address.  Returns 0 or -errno.
 */
static int aioumm_watch(int epfd, int eventfd, struct stub_data *d)
{
	struct epoll_event ev = { .events = EPOLLIN | EPOLLET, .data.ptr = d };

	return epoll_ctl(epfd, EPOLL_CTL_ADD, eventfd, &ev) < 0 ? -errno : 0;
}

/*
 * What a pass of futex_bridge.py looks at, without sleeping: the pages of the
 * stubs (at most max, and at most AIOUMM_PASS_MAX) whose eventfd was written
 * since the last look and whose word says the controller owns the page, in
 * ready[].  A notification whose word says otherwise is a spare one (its
 * report was taken by spinning); *last is the page of the last notification
 * of either kind, or NULL.  Returns how many are in ready[], or -errno.
 */
static int aioumm_take_handovers(int epfd, struct stub_data **ready, int max, struct stub_data **last)
{
	struct epoll_event events[AIOUMM_PASS_MAX];
	int n, taken = 0;

	*last = NULL;
	n = epoll_wait(epfd, events, max < AIOUMM_PASS_MAX ? max : AIOUMM_PASS_MAX, 0);
	if (n < 0)
		return errno == EINTR ? 0 : -errno;
	for (int i = 0; i < n; i++) {
		struct stub_data *d = events[i].data.ptr;

		if (aioumm_load_handoff(d) == STUB_HANDOFF_CONTROLLER)
			ready[taken++] = d;
		*last = d;
	}
	return taken;
}

/* What one `pause` costs here, in ns (measured over a few thousand): turns a spin time into a count. */
static double aioumm_pause_ns(void)
{
	int64_t t0 = now_ns(), t;

	for (int i = 0; i < 4096; i++)
		__builtin_ia32_pause();
	t = now_ns() - t0;
	return t > 0 ? (double)t / 4096 : 1.0;
}

/* Wake the stub without touching the page: a guard against a lost wake, never a hand-back. */
static int aioumm_wake(struct stub_data *d)
{
	return wake(d);
}

/*
 * Whether two of our descriptors name the same open file description:
 * 1 yes, 0 no, -errno when kcmp(2) cannot tell (kernel without it).
 */
static int aioumm_same_file(int a, int b)
{
	pid_t self = getpid();
	long res = syscall(SYS_kcmp, self, self, 0 /* KCMP_FILE */, a, b);

	if (res < 0)
		return -errno;
	return res == 0;
}

_Static_assert(sizeof(((struct aioumm_batch *)0)->fds) / sizeof(int32_t) == STUB_MAX_FDS,
	       "one FD map slot per descriptor a batch may pass");
_Static_assert(sizeof(((struct aioumm_batch *)0)->dups) / sizeof(int32_t) == STUB_MAX_FDS,
	       "one duplicate per FD map slot");
_Static_assert(sizeof(((struct aioumm_batch *)0)->records) / sizeof(struct stub_record)
	       == STUB_BATCH_CAPACITY, "a batch holds what the data page holds");
_Static_assert(sizeof(((struct aioumm_batch *)0)->calls) / sizeof(uint32_t) == STUB_BATCH_CAPACITY,
	       "one call count per record");

/* fcntl(2) of Linux 6.10: 1 when two descriptors name the same open file description. */
#ifndef F_DUPFD_QUERY
#define F_DUPFD_QUERY (1024 + 3)	/* F_LINUX_SPECIFIC_BASE + 3 */
#endif

/* Set once F_DUPFD_QUERY proved unknown (a kernel before 6.10); tests set it to try kcmp. */
int aioumm_no_dupfd_query;

/*
 * Whether the caller's fd still names the open file description our dup was
 * taken from: 1 yes, 0 no, -errno (EBADF: fd is closed).  F_DUPFD_QUERY
 * costs one descriptor lookup; kcmp, for older kernels, takes locks and a
 * ptrace access check and costs five times as much here; without either the
 * inode decides.
 */

static int batch_same_file(int fd, int dup)
{
	struct stat a, b;
	int res;

	if (!aioumm_no_dupfd_query) {
		res = fcntl(fd, F_DUPFD_QUERY, dup);
		if (res >= 0)
			return res != 0;
		if (errno != EINVAL)
			return -errno;
		aioumm_no_dupfd_query = 1;	/* an unknown command */
	}
	res = aioumm_same_file(fd, dup);
	if (res >= 0 || res == -EBADF)
		return res;
	if (fstat(fd, &a) < 0 || fstat(dup, &b) < 0)
		return -errno;
	return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

enum {
	AIOUMM_BATCH_FULL = 0,
	AIOUMM_BATCH_QUEUED = 1,
	AIOUMM_BATCH_REFUSED = 2,
};

/*
 * What Stub._checked accepts, for what its types let through (a negative
 * or too large Python int never gets here: cffi refuses to convert it).
 * The stub must never run anything else: an unaligned or empty range, one
 * past the user address space or over the stub pages, unknown protection
 * bits, an offset from which the length would pass 2^63.
 */
static int batch_args_ok(uint64_t addr, uint64_t length, uint32_t prot, int32_t fd, uint64_t offset)
{
	uint64_t end;

	if ((addr | length | offset) % STUB_PAGE_SIZE || length == 0 ||
	    (prot & ~(uint32_t)(PROT_READ | PROT_WRITE | PROT_EXEC)) || fd < -1)
		return 0;
	if (__builtin_add_overflow(addr, length, &end) || end > STUB_TASK_TOP)
		return 0;
	if (end > STUB_AREA_START && addr < STUB_AREA_END)
		return 0;
	return offset < (UINT64_C(1) << 63) - length;
}

/*
 * Queue one record into b, merged into the last one when the rules allow:
 * same operation, contiguous addresses, and for mmap the same protection,
 * sharing and slot with contiguous offsets (mprotect: the same protection).
 * A slot is reused only while the caller's fd still names the slot's file,
 * so a number closed and reused for another file gets a slot (and a merge
 * decision) of its own; a new descriptor gets a duplicate of its own, which
 * the batch keeps until it is closed.  fd < 0 is an anonymous mapping (and
 * offset is then ignored); only mmap looks at fd, offset and flags.
 *
 * Returns AIOUMM_BATCH_QUEUED; AIOUMM_BATCH_FULL when there is no room
 * (records or FD map full), AIOUMM_BATCH_REFUSED for arguments the stub
 * must not get (batch_args_ok), -errno for a descriptor that is closed
 * (EBADF) or cannot be duplicated (EMFILE): then nothing was queued or
 * duplicated.
 */
static int aioumm_batch_add(struct aioumm_batch *b, uint32_t op, uint64_t addr, uint64_t length,
			    uint32_t prot, int32_t fd, uint64_t offset, uint32_t flags)
{
	int32_t slot = STUB_SLOT_ANON;
	int found = 1;
	struct stub_record *r;

	if (!batch_args_ok(addr, length, prot, fd, offset))
		return AIOUMM_BATCH_REFUSED;
	if (op != STUB_OP_MMAP) {
		fd = -1;
		flags = STUB_MAP_SHARED;
	}
	if (fd < 0) {
		offset = 0;
	} else {
		found = 0;
		for (uint32_t i = 0; i < b->nfds && !found; i++) {
			if (b->fds[i] != fd)
				continue;
			int same = batch_same_file(fd, b->dups[i]);

			if (same < 0)
				return same;
			if (same) {
				slot = (int32_t)i;
				found = 1;
			}
		}
	}
	if (found && b->len > 0) {
		uint64_t end, file_end, merged;

		r = &b->records[b->len - 1];
		if (r->op == op && r->fd_slot == slot && !__builtin_add_overflow(r->addr, r->length, &end) &&
		    end == addr && !__builtin_add_overflow(r->length, length, &merged) &&
		    (op == STUB_OP_MUNMAP || r->prot == prot) &&
		    (op != STUB_OP_MMAP ||
		     (r->flags == flags &&
		      (slot < 0 || (!__builtin_add_overflow(r->offset, r->length, &file_end) &&
				    file_end == offset))))) {
			r->length = merged;
			b->calls[b->len - 1]++;
			return AIOUMM_BATCH_QUEUED;
		}
	}
	if (b->len >= STUB_BATCH_CAPACITY)
		return AIOUMM_BATCH_FULL;
	if (!found) {
		int dup;

		if (b->nfds >= STUB_MAX_FDS)
			return AIOUMM_BATCH_FULL;
		dup = fcntl(fd, F_DUPFD_CLOEXEC, 3);
		if (dup < 0)
			return -errno;
		slot = (int32_t)b->nfds++;
		b->fds[slot] = fd;
		b->dups[slot] = dup;
	}
	r = &b->records[b->len];
	r->op = op;
	r->fd_slot = slot;
	r->prot = prot;
	r->flags = flags;
	r->addr = addr;
	r->length = length;
	r->offset = offset;
	b->calls[b->len++] = 1;
	return AIOUMM_BATCH_QUEUED;
}

/*
 * Put b's records into the data page for the stub to run as batch seq, with
 * the number of descriptors sent for it.  Returns the number of records.
 */
static uint32_t aioumm_batch_load(struct stub_data *d, const struct aioumm_batch *b, uint32_t seq)
{
	memcpy(d->records, b->records, b->len * sizeof(struct stub_record));
	d->batch_len = b->len;
	d->batch_nfds = b->nfds;
	d->batch_seq = seq;
	return b->len;
}

/*
 * Close b's duplicates; the map is empty before the first close, so a second
 * call closes nothing.  Returns 0, or -errno of the first close that failed.
 */
static int aioumm_batch_close(struct aioumm_batch *b)
{
	uint32_t n = b->nfds;
	int res = 0;

	b->nfds = 0;
	for (uint32_t i = 0; i < n && i < STUB_MAX_FDS; i++)
		if (close(b->dups[i]) < 0 && res == 0)
			res = -errno;
	return res;
}

/*
 * One non-blocking sendmsg of n descriptors as SCM_RIGHTS, the data being
 * the batch sequence number (fdchannel.py).  MSG_NOSIGNAL: a stub that is
 * gone makes it fail with EPIPE, never raise SIGPIPE.  Returns 0 or -errno
 * (-EAGAIN: the socket is full).
 */
static int aioumm_send_fds(int sock, const int32_t *fds, uint32_t n, uint32_t seq)
{
	union {
		char buf[CMSG_SPACE(sizeof(int32_t) * STUB_MAX_FDS)];
		struct cmsghdr align;
	} control;
	struct iovec iov = { .iov_base = &seq, .iov_len = sizeof(seq) };
	struct msghdr msg = {
		.msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = control.buf,
		.msg_controllen = CMSG_SPACE(sizeof(int32_t) * n),
	};
	struct cmsghdr *cmsg;

	if (n == 0 || n > STUB_MAX_FDS)
		return -EINVAL;
	memset(&control, 0, sizeof(control));
	cmsg = CMSG_FIRSTHDR(&msg);
	cmsg->cmsg_level = SOL_SOCKET;
	cmsg->cmsg_type = SCM_RIGHTS;
	cmsg->cmsg_len = CMSG_LEN(sizeof(int32_t) * n);
	memcpy(CMSG_DATA(cmsg), fds, sizeof(int32_t) * n);
	while (sendmsg(sock, &msg, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
		if (errno != EINTR)
			return -errno;
	return 0;
}

static void *aioumm_map_shared(int fd, size_t length)
{
	void *p = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);

	return p == MAP_FAILED ? NULL : p;
}

static int aioumm_unmap(void *addr, size_t length)
{
	return munmap(addr, length) == 0 ? 0 : -errno;
}

/*
 * mseal(2) probe that seals nothing: a kernel with mseal rejects unknown
 * flags with EINVAL (after checking them, before looking at the range),
 * one without it answers ENOSYS.  Returns 0 when mseal exists, else -errno.
 */
static int aioumm_probe_mseal(void)
{
	if (syscall(462, 0UL, 0UL, ~0UL) == 0)
		return 0;
	return errno == EINVAL ? 0 : -errno;
}

/* The CPU the calling thread runs on now (where the controller's stubs are placed). */
static int aioumm_current_cpu(void)
{
	return sched_getcpu();
}

/*
 * _native.c - the controller's native helpers, compiled by cffi.
 *
 * Only what Python cannot do itself, or not cheaply: the release store plus
 * FUTEX_WAKE that hands a stub data page back, the acquire load that reads
 * the handoff word, and mapping the data memfd in the controller.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <linux/futex.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "stub_src/stub_abi.h"

enum {
	AIOUMM_REPORT_OK = 0,
	AIOUMM_REPORT_BAD_SIGNAL = 1,
	AIOUMM_REPORT_BAD_SIGINFO = 2,
	AIOUMM_REPORT_BAD_UCONTEXT = 3,
	AIOUMM_REPORT_SIGNO_MISMATCH = 4,
};

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

static uint32_t aioumm_load_handoff(const struct stub_data *d)
{
	return __atomic_load_n(&d->handoff, __ATOMIC_ACQUIRE);
}

/* The CPU the calling thread runs on, as a stub reads it (the low 12 bits of TSC_AUX). */
static uint32_t current_cpu(void)
{
	uint32_t lo, hi, aux;

	__asm__ volatile("rdtscp" : "=a"(lo), "=d"(hi), "=c"(aux));
	return aux & 0xfff;
}

/* What a hand-back writes before the word: the command and the stub's spin for next time. */
static void prepare_hand_back(struct stub_data *d, uint32_t command, uint32_t spin_limit)
{
	d->command = command;
	d->spin_limit = spin_limit;
	d->controller_cpu = current_cpu();
}

/*
 * Give the page back to the stub.  The command and everything else written
 * to the page happen before the release store; FUTEX_WAKE comes after it, so
 * a stub that sleeps in FUTEX_WAIT(word == CONTROLLER) either sees CHILD
 * before sleeping (the kernel compares under its lock) or is woken.  (A
 * stub still spinning sees CHILD at once; the wake then finds nobody.)
 * Returns 0, or -errno from the wake.
 */
static int aioumm_hand_back(struct stub_data *d, uint32_t command, uint32_t spin_limit)
{
	prepare_hand_back(d, command, spin_limit);
	__atomic_store_n(&d->handoff, STUB_HANDOFF_CHILD, __ATOMIC_RELEASE);
	if (syscall(SYS_futex, &d->handoff, FUTEX_WAKE, 1, NULL, NULL, 0) < 0)
		return -errno;
	return 0;
}

/*
 * Validate the report in the data page and copy what Python needs out of it.
 * Guest code can write the page, so every address is checked before it is
 * followed.  Returns AIOUMM_REPORT_OK or the first check that failed.
 */
static int aioumm_read_report(const struct stub_data *d, struct aioumm_report *r)
{
	const uint64_t lo = STUB_DATA_ADDR + STUB_ALTSTACK_OFFSET, hi = STUB_DATA_ADDR + STUB_DATA_SIZE;
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
	return AIOUMM_REPORT_OK;
}

/*
 * The store half of a hand-back: the page is the stub's again, and a stub
 * still spinning or not yet asleep sees it at once.  A stub already asleep
 * needs the FUTEX_WAKE that aioumm_wake_many does later (see futex_bridge.py:
 * deferring the wake is safe, the waiter re-checks the word).
 */
static void aioumm_hand_back_later(struct stub_data *d, uint32_t command, uint32_t spin_limit)
{
	prepare_hand_back(d, command, spin_limit);
	__atomic_store_n(&d->handoff, STUB_HANDOFF_CHILD, __ATOMIC_RELEASE);
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
 * Spin up to budget_ns until d's stub hands its page over: 1 when it did,
 * 0 when the time ran out, -1 at once when the stub last reported from this
 * CPU (it could not run while we spin here).  The
 * caller answers it then as if its eventfd had been seen; the eventfd write
 * that follows is a spare notification, which the word's re-check makes
 * harmless (see futex_bridge.py).
 */
static int aioumm_spin_for_report(const struct stub_data *d, int64_t budget_ns)
{
	int64_t deadline;

	if (__atomic_load_n(&d->report_cpu, __ATOMIC_RELAXED) == current_cpu())
		return -1;
	deadline = now_ns() + budget_ns;
	for (;;) {
		for (int i = 0; i < 32; i++) {
			if (__atomic_load_n(&d->handoff, __ATOMIC_ACQUIRE) == STUB_HANDOFF_CONTROLLER)
				return 1;
			__builtin_ia32_pause();
		}
		if (now_ns() >= deadline)
			return 0;
	}
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
	if (syscall(SYS_futex, &d->handoff, FUTEX_WAKE, 1, NULL, NULL, 0) < 0)
		return -errno;
	return 0;
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

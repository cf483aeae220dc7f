/*
 * stub_code.c - the stub code image: the signal handler every stub runs.
 *
 * This is linked at STUB_CODE_ADDR, turned into a flat binary and mapped
 * read+exec from one sealed memfd into every stub.  It has no writable data:
 * all state lives in the stub data page at STUB_DATA_ADDR.
 *
 * Every trapped guest syscall, fault and SIGALRM lands in stub_handler() on
 * the alternate stack inside the data pages.  The handler records where the
 * signal frame lies, hands the page to the controller, and waits.  The
 * controller either asks for a batch of mmap/munmap/mprotect records (then
 * the handler runs them and hands over again) or for a resume (then the
 * handler restores the FS/GS base and returns, so rt_sigreturn loads the
 * registers the controller may have edited in the frame).
 *
 * Each syscall the handler makes comes from exactly one `syscall`
 * instruction, in its own never-inlined function below; the label right
 * after it goes into the site table of the image header, and the
 * bootstrap's seccomp filter allows that syscall from that address only
 * (with argument checks where they pin the call down).  Guest code that
 * jumps into this page therefore gains no syscall it could not already
 * ask the controller for, except the handful each site permits.
 */
#include "stub_sys.h"

#define STUB_SITE(name) ".globl stub_site_" #name "\nstub_site_" #name ":\n"
#define STUB_NOINLINE __attribute__((noinline, noclone, used))

#define D ((struct stub_data *)STUB_DATA_ADDR)

extern char stub_site_futex[], stub_site_notify[], stub_site_recvmsg[], stub_site_close[],
	stub_site_mmap[], stub_site_munmap[], stub_site_mprotect[], stub_site_sigreturn[],
	stub_site_arch_prctl[], stub_site_exit[];

void stub_handler(int sig, struct stub_siginfo *info, struct stub_ucontext *uc);
void stub_restorer(void);

/*
 * The restorer must live in this page: rt_sigreturn is allowed only from
 * here, and its instruction pointer is what the filter checks.
 */
__asm__(".text\n"
	".globl stub_restorer\n"
	"stub_restorer:\n"
	"	movl $15, %eax\n"	/* __NR_rt_sigreturn */
	"	syscall\n"
	STUB_SITE(sigreturn)
	"	ud2\n");

static STUB_NOINLINE long site_futex_wait(uint32_t *word, uint32_t expected)
{
	long ret;
	register long r10 __asm__("r10") = 0;

	__asm__ volatile("syscall\n" STUB_SITE(futex)
			 : "=a"(ret)
			 : "0"((long)__NR_futex), "D"(word), "S"((long)FUTEX_WAIT),
			   "d"((long)expected), "r"(r10)
			 : "rcx", "r11", "memory");
	return ret;
}

static STUB_NOINLINE long site_notify(void)
{
	static const uint64_t one = 1;
	long ret;

	__asm__ volatile("syscall\n" STUB_SITE(notify)
			 : "=a"(ret)
			 : "0"((long)__NR_write), "D"((long)STUB_FD_EVENT), "S"(&one),
			   "d"((long)sizeof(one))
			 : "rcx", "r11", "memory");
	return ret;
}

static STUB_NOINLINE long site_recvmsg(struct stub_msghdr *msg)
{
	long ret;

	__asm__ volatile("syscall\n" STUB_SITE(recvmsg)
			 : "=a"(ret)
			 : "0"((long)__NR_recvmsg), "D"((long)STUB_FD_CHANNEL), "S"(msg),
			   "d"((long)(STUB_MSG_DONTWAIT | STUB_MSG_CMSG_CLOEXEC))
			 : "rcx", "r11", "memory");
	return ret;
}

static STUB_NOINLINE long site_close(long fd)
{
	long ret;

	__asm__ volatile("syscall\n" STUB_SITE(close)
			 : "=a"(ret)
			 : "0"((long)__NR_close), "D"(fd)
			 : "rcx", "r11", "memory");
	return ret;
}

static STUB_NOINLINE long site_mmap(uint64_t addr, uint64_t len, long prot, long flags, long fd,
				    uint64_t off)
{
	long ret;
	register long r10 __asm__("r10") = flags;
	register long r8 __asm__("r8") = fd;
	register long r9 __asm__("r9") = (long)off;

	__asm__ volatile("syscall\n" STUB_SITE(mmap)
			 : "=a"(ret)
			 : "0"((long)__NR_mmap), "D"(addr), "S"(len), "d"(prot), "r"(r10),
			   "r"(r8), "r"(r9)
			 : "rcx", "r11", "memory");
	return ret;
}

static STUB_NOINLINE long site_munmap(uint64_t addr, uint64_t len)
{
	long ret;

	__asm__ volatile("syscall\n" STUB_SITE(munmap)
			 : "=a"(ret)
			 : "0"((long)__NR_munmap), "D"(addr), "S"(len)
			 : "rcx", "r11", "memory");
	return ret;
}

static STUB_NOINLINE long site_mprotect(uint64_t addr, uint64_t len, long prot)
{
	long ret;

	__asm__ volatile("syscall\n" STUB_SITE(mprotect)
			 : "=a"(ret)
			 : "0"((long)__NR_mprotect), "D"(addr), "S"(len), "d"(prot)
			 : "rcx", "r11", "memory");
	return ret;
}

/* Only used where the CPU lacks FSGSBASE (the bootstrap says which). */
static STUB_NOINLINE long site_arch_prctl(long code, uint64_t arg)
{
	long ret;

	__asm__ volatile("syscall\n" STUB_SITE(arch_prctl)
			 : "=a"(ret)
			 : "0"((long)__NR_arch_prctl), "D"(code), "S"(arg)
			 : "rcx", "r11", "memory");
	return ret;
}

/* A fatal error: leave the line for the controller and die with the code. */
static STUB_NOINLINE __attribute__((noreturn)) void stub_fatal(int code, unsigned int line)
{
	D->fatal_line = line;
	for (;;)
		__asm__ volatile("syscall\n" STUB_SITE(exit)
				 :
				 : "a"((long)__NR_exit_group), "D"((long)code)
				 : "rcx", "r11", "memory");
}

#define FATAL(code) stub_fatal(code, __LINE__)

/*
 * Receive the descriptors announced for this batch.  They were sent before
 * the page was handed back, so they are already queued: a non-blocking
 * receive that finds nothing means the controller's send failed.  Each
 * message carries the sequence number of its batch; one from an earlier
 * batch that never ran is closed and skipped.
 * Returns 0 when exactly the announced descriptors arrived (in fds[],
 * counted in *got), -1 otherwise (what did arrive is still in fds[] and
 * counted in *got, so it can be closed).
 */
static int receive_fds(const struct stub_data *d, int *fds, uint32_t want, int *got)
{
	for (int tries = 0; tries < STUB_MAX_STALE_MESSAGES; tries++) {
		uint32_t seq = ~d->batch_seq;
		struct stub_iovec iov = { &seq, sizeof(seq) };
		union {
			char buf[sizeof(struct stub_cmsghdr) + sizeof(int) * STUB_MAX_FDS];
			struct stub_cmsghdr align;
		} ctrl;
		struct stub_msghdr msg = {
			.iov = &iov,
			.iovlen = 1,
			.control = ctrl.buf,
			.controllen = sizeof(ctrl.buf),
		};
		struct stub_cmsghdr *cmsg = &ctrl.align;
		const int *passed = (const int *)(ctrl.buf + sizeof(struct stub_cmsghdr));
		long res;
		int n = 0;

		cmsg->len = 0;
		res = site_recvmsg(&msg);
		if (res < 0)
			return -1;
		if (msg.controllen >= sizeof(*cmsg) && cmsg->level == STUB_SOL_SOCKET &&
		    cmsg->type == STUB_SCM_RIGHTS && cmsg->len >= sizeof(*cmsg) &&
		    cmsg->len <= sizeof(ctrl.buf))
			n = (int)((cmsg->len - sizeof(*cmsg)) / sizeof(int));
		for (int i = 0; i < n; i++)
			fds[i] = passed[i];
		*got = n;
		if (res == sizeof(seq) && seq == d->batch_seq)
			return (msg.flags & STUB_MSG_CTRUNC) || (uint32_t)n != want ? -1 : 0;
		/* A stale message: drop its descriptors and look at the next one. */
		while (n > 0)
			site_close(fds[--n]);
		*got = 0;
	}
	return -1;
}

static long run_record(const struct stub_record *rec, const int *fds, int nfds)
{
	long flags, fd = -1, res;

	switch (rec->op) {
	case STUB_OP_MMAP:
		flags = MAP_FIXED;
		flags |= rec->flags == STUB_MAP_PRIVATE ? MAP_PRIVATE : MAP_SHARED;
		if (rec->fd_slot == STUB_SLOT_ANON)
			flags |= MAP_ANONYMOUS;
		else if (rec->fd_slot >= 0 && rec->fd_slot < nfds)
			fd = fds[rec->fd_slot];
		else
			return -EBADF;
		res = site_mmap(rec->addr, rec->length, rec->prot, flags, fd, rec->offset);
		if (res < 0 && res > -4096)
			return res;
		return (uint64_t)res == rec->addr ? 0 : -EFAULT;
	case STUB_OP_MUNMAP:
		return site_munmap(rec->addr, rec->length);
	case STUB_OP_MPROTECT:
		return site_mprotect(rec->addr, rec->length, rec->prot);
	default:
		return -EINVAL;
	}
}

static void run_batch(struct stub_data *d)
{
	int fds[STUB_MAX_FDS];
	int nfds = 0;
	uint32_t want = d->batch_nfds, len = d->batch_len;

	d->batch_done = 0;
	d->batch_errno = 0;
	if (want > STUB_MAX_FDS || len > STUB_BATCH_CAPACITY) {
		d->batch_errno = EINVAL;
		return;
	}
	if (want && receive_fds(d, fds, want, &nfds) < 0) {
		d->batch_errno = STUB_BATCH_EFDS;
		goto close;
	}
	for (uint32_t i = 0; i < len; i++) {
		long res = run_record(&d->records[i], fds, nfds);

		if (res < 0) {
			d->batch_errno = (int32_t)-res;
			break;
		}
		d->batch_done = i + 1;
	}
close:
	/* The controller keeps its own copies; these were duplicates. */
	while (nfds > 0)
		site_close(fds[--nfds]);
}

static inline uint64_t read_fs_base(void)
{
	uint64_t v;

	__asm__ volatile("rdfsbase %0" : "=r"(v));
	return v;
}

static inline uint64_t read_gs_base(void)
{
	uint64_t v;

	__asm__ volatile("rdgsbase %0" : "=r"(v));
	return v;
}

static void save_arch_state(struct stub_data *d)
{
	if (d->flags & STUB_INIT_FSGSBASE) {
		d->fs_base = read_fs_base();
		d->gs_base = read_gs_base();
		return;
	}
	if (site_arch_prctl(ARCH_GET_FS, (uint64_t)&d->fs_base) < 0 ||
	    site_arch_prctl(ARCH_GET_GS, (uint64_t)&d->gs_base) < 0)
		FATAL(STUB_EXIT_HANDLER_FSBASE);
}

static void restore_arch_state(struct stub_data *d)
{
	uint64_t fs = d->fs_base, gs = d->gs_base;

	/* wrfsbase faults on a non-canonical base: refuse it with a clear exit code instead. */
	if (d->flags & STUB_INIT_FSGSBASE) {
		if ((fs >> 47) != 0 || (gs >> 47) != 0)
			FATAL(STUB_EXIT_HANDLER_FSBASE);
		__asm__ volatile("wrfsbase %0" : : "r"(fs) : "memory");
		__asm__ volatile("wrgsbase %0" : : "r"(gs) : "memory");
		return;
	}
	if (site_arch_prctl(ARCH_SET_FS, fs) < 0 || site_arch_prctl(ARCH_SET_GS, gs) < 0)
		FATAL(STUB_EXIT_HANDLER_FSBASE);
}

/*
 * The CPU this runs on: Linux keeps it in the low 12 bits of TSC_AUX, which
 * rdtscp reads (no syscall, no vDSO).  A CPU without the instruction cannot
 * tell, and its stub never spins.
 */
static inline uint32_t current_cpu(const struct stub_data *d)
{
	uint32_t lo, hi, aux;

	if (!(d->flags & STUB_INIT_RDTSCP))
		return STUB_CPU_UNKNOWN;
	__asm__ volatile("rdtscp" : "=a"(lo), "=d"(hi), "=c"(aux));
	return aux & 0xfff;
}

/*
 * Hand the page to the controller and wait until it is handed back.
 * The release store publishes the report before the controller can see the
 * word flip; the eventfd write comes after the store, so a controller woken
 * by it always reads CONTROLLER (see futex_bridge.py for the whole argument).
 * FUTEX_WAIT re-checks the word in the kernel, so a hand-back that lands
 * before we sleep is never lost: the wait returns EAGAIN at once.  The
 * controller wakes only a stub that said it sleeps (SLEEPING): the swap
 * below and the controller's exchange are two atomic operations on one
 * word, so either it sees SLEEPING and wakes, or we see CHILD and go on.
 *
 * Before sleeping the stub may spin on the word, as the controller asked
 * with its last hand-back: an answer that comes within the spin costs no
 * sleep and no wake-up, which across CPUs of a virtual machine is most of a
 * round trip.  Never on the controller's own CPU (spinning there would only
 * delay the answer), and never longer than STUB_SPIN_MAX pauses, whatever
 * the page says: a guest that rewrites the limit wastes only its own time.
 */
static void hand_over_and_wait(struct stub_data *d)
{
	/* The controller's fields are read while the page is still ours. */
	uint32_t limit = d->spin_limit, cpu = current_cpu(d);
	long res;

	if (cpu == d->controller_cpu || cpu == STUB_CPU_UNKNOWN)
		limit = 0;
	else if (limit > STUB_SPIN_MAX)
		limit = STUB_SPIN_MAX;
	d->report_cpu = cpu;
	__atomic_store_n(&d->handoff, STUB_HANDOFF_CONTROLLER, __ATOMIC_RELEASE);
	res = site_notify();
	if (res != sizeof(uint64_t))
		FATAL(STUB_EXIT_HANDLER_NOTIFY);
	for (uint32_t i = 0; i < limit; i++) {
		if (__atomic_load_n(&d->handoff, __ATOMIC_ACQUIRE) == STUB_HANDOFF_CHILD) {
			d->spun = i;
			return;
		}
		__builtin_ia32_pause();
	}
	/*
	 * About to sleep: say so, so that the hand-back wakes us (a stub that
	 * never says so is never woken, which is what spares a wake when the
	 * answer came while it spun).  The swap fails only if the word is
	 * CHILD already: the answer came in between, and there is no sleep.
	 */
	uint32_t expected = STUB_HANDOFF_CONTROLLER;

	if (!__atomic_compare_exchange_n(&d->handoff, &expected, STUB_HANDOFF_SLEEPING, 0,
					 __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE) &&
	    expected == STUB_HANDOFF_CHILD) {
		d->spun = limit;
		return;
	}
	while (__atomic_load_n(&d->handoff, __ATOMIC_ACQUIRE) != STUB_HANDOFF_CHILD) {
		res = site_futex_wait(&d->handoff, STUB_HANDOFF_SLEEPING);
		if (res < 0 && res != -EAGAIN && res != -EINTR)
			FATAL(STUB_EXIT_HANDLER_WAIT);
	}
	d->spun = STUB_SPUN_SLEPT;
}

void stub_handler(int sig, struct stub_siginfo *info, struct stub_ucontext *uc)
{
	struct stub_data *d = D;

	save_arch_state(d);
	d->signal = sig;
	d->siginfo_addr = (uint64_t)info;
	d->ucontext_addr = (uint64_t)uc;
	for (;;) {
		hand_over_and_wait(d);
		if (d->command == STUB_CMD_RESUME)
			break;
		if (d->command != STUB_CMD_BATCH)
			FATAL(STUB_EXIT_HANDLER_COMMAND);
		run_batch(d);
	}
	restore_arch_state(d);
	/*
	 * The guest can reach rt_sigreturn through the restorer with a frame of
	 * its own and so block signals (SIGALRM: interrupt() would stop
	 * working).  The stub process itself never blocks anything (a guest's
	 * signal mask is the controller's business), so every return from here
	 * unblocks everything again; the controller also kills a stub that does
	 * not stop soon after interrupt().  (Such a frame can also move or
	 * disable the alt stack; the next report then lies outside it and the
	 * controller refuses it, which only costs that guest its stub.)
	 */
	uc->sigmask = 0;
}

/* The compiler may turn loops or struct copies into these calls. */
void *memset(void *s, int c, size_t n)
{
	unsigned char *p = s;

	while (n--)
		*p++ = (unsigned char)c;
	return s;
}

void *memcpy(void *dst, const void *src, size_t n)
{
	unsigned char *d = dst;
	const unsigned char *s = src;

	while (n--)
		*d++ = *s++;
	return dst;
}

#define SITE(name_, nr_) { .nr = (nr_), .ip = (uint64_t)stub_site_##name_ }

__attribute__((section(".stub_header"), used))
const struct stub_code_header stub_code_header = {
	.magic = STUB_CODE_MAGIC,
	.abi_version = STUB_ABI_VERSION,
	.handler = (uint64_t)stub_handler,
	.restorer = (uint64_t)stub_restorer,
	.nsites = 10,
	.sites = {
		/* Only FUTEX_WAIT, and only on the handoff word. */
		{ .nr = __NR_futex, .ip = (uint64_t)stub_site_futex, .checks = {
			{ 0, STUB_CHECK_EQ, STUB_DATA_ADDR + offsetof(struct stub_data, handoff) },
			{ 1, STUB_CHECK_EQ, FUTEX_WAIT } } },
		/* Only to the stub's own eventfd. */
		{ .nr = __NR_write, .ip = (uint64_t)stub_site_notify, .checks = {
			{ 0, STUB_CHECK_EQ, STUB_FD_EVENT } } },
		/* Only from the FD-passing channel. */
		{ .nr = __NR_recvmsg, .ip = (uint64_t)stub_site_recvmsg, .checks = {
			{ 0, STUB_CHECK_EQ, STUB_FD_CHANNEL } } },
		/* Never the channel or the eventfd. */
		{ .nr = __NR_close, .ip = (uint64_t)stub_site_close, .checks = {
			{ 0, STUB_CHECK_GE, STUB_FD_FIRST_PASSED } } },
		SITE(mmap, __NR_mmap),
		SITE(munmap, __NR_munmap),
		SITE(mprotect, __NR_mprotect),
		SITE(sigreturn, __NR_rt_sigreturn),
		SITE(arch_prctl, __NR_arch_prctl),
		SITE(exit, __NR_exit_group),
	},
};

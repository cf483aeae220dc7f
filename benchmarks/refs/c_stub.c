/*
 * c_stub: a C controller driving aioumm's own stub through aioumm's protocol.
 *
 * This is the floor a Python controller on the same stub can approach: the
 * same bootstrap binary, the same code image, the same data page, the same
 * handoff (the stub's eventfd watched with epoll, an acquire load of the
 * handoff word, the page handed back with a release store and FUTEX_WAKE),
 * and the same FD passing (SCM_RIGHTS on the SOCK_SEQPACKET channel before
 * the hand-back).  Only the controller's language differs.  Every layout and
 * constant comes from the one ABI header, stub_abi.h.
 *
 * --mode roundtrip (default): a guest page is mapped in the first batch (the
 * ASKER loop: syscall 500 with RDI = i, answer checked against 3*i+1, ud2 on
 * a mismatch), the guest is started by setting RIP/RSP in the saved signal
 * frame, and N trapped calls are answered by writing RAX.
 *
 * --mode flush: N batches of 64 shared mmaps of one 4-KiB page each, the
 * pages spread over 4 memfds passed together in one sendmsg; each batch is
 * followed by an untimed batch that unmaps the region again, so every timed
 * batch does the same work on an empty range.
 *
 * --stubs K (roundtrip only, default 1): K stubs, each with the ASKER guest,
 * driven at once from this one thread the way aioumm's controller drives
 * many stubs (futex_bridge.py, "Many stubs, one wake-up"): every eventfd in
 * one edge-triggered epoll set, never read; a pass answers each stub that
 * handed over and makes the FUTEX_WAKEs of the pass at its end.  N is the
 * total, N / K round trips per stub (at least 20).  No spinning: aioumm spins
 * only while one stub alone runs.  This is the floor for aioumm's many-stub
 * throughput figures (but see benchmarks/refs/README.md on --pin apart).
 *
 * Timing is done by the controller: a round-trip sample is the time between
 * two consecutive hand-overs it observes (so it holds the controller's own
 * work on the report as well as the stub's trip through the kernel); a flush
 * sample runs from writing the first record to observing the result.  The
 * guest here has no clock (the vDSO is unmapped, as under aioumm).
 */
#include "common.h"
#include "../../aioumm/stub_src/stub_abi.h"

#include <cpuid.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <linux/futex.h>
#include <sys/auxv.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#define EXTRA_USAGE "[--pin apart] [--mode roundtrip|flush] [--bin-dir DIR] [--spin NS] [--stubs K]"

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#define NR_MSEAL 462
#define HWCAP2_FSGSBASE (1 << 1)

/* The guest: where its page and stack go, and the ASKER loop, hand-assembled. */
#define GUEST_CODE_ADDR 0x10000ULL
#define GUEST_STACK_TOP 0x200000ULL
#define GUEST_STACK_SIZE 0x10000ULL
#define GUEST_SYSCALL 500
static const unsigned char asker[] = {
	0x45, 0x31, 0xe4,			/* xor %r12d,%r12d */
	0xb8, 0xf4, 0x01, 0x00, 0x00,		/* 1: mov $500,%eax */
	0x4c, 0x89, 0xe7,			/* mov %r12,%rdi */
	0x0f, 0x05,				/* syscall */
	0x4b, 0x8d, 0x5c, 0x64, 0x01,		/* lea 1(%r12,%r12,2),%rbx */
	0x48, 0x39, 0xd8,			/* cmp %rbx,%rax */
	0x75, 0x05,				/* jne 2f */
	0x49, 0xff, 0xc4,			/* inc %r12 */
	0xeb, 0xe7,				/* jmp 1b */
	0x0f, 0x0b,				/* 2: ud2 */
};

/* The flush workload. */
#define FLUSH_PAGES 64
#define FLUSH_FDS 4
#define FLUSH_ADDR 0x40000000ULL

/* A stub that does not answer within this long fails the run instead of hanging it. */
#define WAIT_MS 10000

/* Ready stubs answered per pass at most, as aioumm's Notifications.PASS. */
#define PASS 256

/* The stub hands over with CONTROLLER, and turns it into SLEEPING when it stops spinning. */
static int handed_over(const struct stub_data *d)
{
	uint32_t word = __atomic_load_n(&d->handoff, __ATOMIC_ACQUIRE);

	return word == STUB_HANDOFF_CONTROLLER || word == STUB_HANDOFF_SLEEPING;
}

struct stub {
	pid_t pid;
	int pidfd, sock, evfd, epfd;
	struct stub_data *d;	/* the controller's mapping of the data page */
	unsigned char *base;
	/* Spinning as aioumm's controller does it (futex_bridge.py, "Spinning"); 0: off. */
	uint64_t spin_ns;
	uint32_t spin_pauses;
};

/* The CPU this runs on: the number the stub reads from TSC_AUX. */
static uint32_t current_cpu(void)
{
	int cpu = sched_getcpu();

	return cpu < 0 ? STUB_CPU_UNKNOWN : (uint32_t)cpu;
}

/* Spin up to spin_ns for the hand-over, unless the stub last ran on this CPU: 1 if it came. */
static int spin_for_handover(struct stub *s)
{
	uint64_t deadline;

	uint32_t cpu = __atomic_load_n(&s->d->report_cpu, __ATOMIC_RELAXED);

	if (!s->spin_ns || cpu == current_cpu() || cpu == STUB_CPU_UNKNOWN)
		return 0;
	deadline = now_ns() + s->spin_ns;
	do {
		for (int i = 0; i < 32; i++) {
			if (handed_over(s->d))
				return 1;
			__builtin_ia32_pause();
		}
	} while (now_ns() < deadline);
	return 0;
}

static int sealed_memfd(const char *name, const void *data, size_t len, size_t size,
			unsigned int seals)
{
	int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);

	if (fd < 0)
		die_errno("memfd_create");
	if (ftruncate(fd, (off_t)size) != 0)
		die_errno("ftruncate");
	if (len && pwrite(fd, data, len, 0) != (ssize_t)len)
		die_errno("pwrite");
	if (seals && fcntl(fd, F_ADD_SEALS, seals) != 0)
		die_errno("F_ADD_SEALS");
	return fd;
}

/* The stub code image, in a memfd sealed against every change (as aioumm does). */
static int code_memfd(const char *bin_dir, uint64_t *size)
{
	char path[PATH_MAX];
	static unsigned char image[STUB_CODE_SIZE];
	FILE *f;
	size_t len;

	snprintf(path, sizeof(path), "%s/stub_code.bin", bin_dir);
	f = fopen(path, "rb");
	if (f == NULL)
		die("%s: %s", path, strerror(errno));
	len = fread(image, 1, sizeof(image), f);
	if (len == 0 || !feof(f))
		die("%s: empty or larger than STUB_CODE_SIZE", path);
	fclose(f);
	*size = STUB_CODE_SIZE;
	return sealed_memfd("c-stub-code", image, len, STUB_CODE_SIZE,
			    F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
}

/* mseal(2) exists when sealing one throw-away page works (the page stays sealed). */
static int have_mseal(void)
{
	void *p = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return 0;
	if (syscall(NR_MSEAL, p, 4096, 0) == 0)
		return 1;
	munmap(p, 4096);
	return 0;
}

static uint32_t init_flags(void)
{
	unsigned int eax, ebx, ecx, edx;
	uint32_t flags = 0;

	if (getauxval(AT_HWCAP2) & HWCAP2_FSGSBASE)
		flags |= STUB_INIT_FSGSBASE;
	if (have_mseal())
		flags |= STUB_INIT_SEAL;
	if (__get_cpuid(0x80000001, &eax, &ebx, &ecx, &edx) && (edx >> 27) & 1)
		flags |= STUB_INIT_RDTSCP;	/* the stub can tell its CPU, and so spin */
	return flags;
}

static int high_dup(int fd)
{
	int n = fcntl(fd, F_DUPFD_CLOEXEC, 10);

	if (n < 0)
		_exit(EXIT_CHILD_SETUP);
	return n;
}

/* fork + exec the bootstrap with the channel at 0, the eventfd at 1, code at 2, data at 3. */
static void spawn(struct stub *s, const struct opts *o, const char *bin_dir, int code_fd,
		  uint64_t code_size, uint32_t flags)
{
	char path[PATH_MAX];
	int sv[2], data_fd;
	struct stub_init init = {
		.magic = STUB_INIT_MAGIC,
		.abi_version = STUB_ABI_VERSION,
		.flags = flags,
		.code_size = code_size,
	};

	snprintf(path, sizeof(path), "%s/aioumm-stub", bin_dir);
	if (access(path, X_OK) != 0)
		die("%s: %s", path, strerror(errno));
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
		die_errno("socketpair");
	s->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (s->evfd < 0)
		die_errno("eventfd");
	/* Sealed against shrinking: the stub must never make our mapping of it SIGBUS. */
	data_fd = sealed_memfd("c-stub-data", NULL, 0, STUB_DATA_SIZE,
			       F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
	s->base = mmap(NULL, STUB_DATA_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, data_fd, 0);
	if (s->base == MAP_FAILED)
		die_errno("mmap data page");
	s->d = (struct stub_data *)s->base;
	if (send(sv[0], &init, sizeof(init), 0) != sizeof(init))
		die_errno("send init");

	s->pid = fork_child();
	if (s->pid == 0) {
		/* Sources above the targets first, so no dup2 overwrites a later source. */
		int src[4] = { high_dup(sv[1]), high_dup(s->evfd), high_dup(code_fd),
			       high_dup(data_fd) };
		char *argv[] = { "aioumm-stub", NULL };
		char *envp[] = { NULL };

		if (apply_child_placement(o) != 0)
			_exit(EXIT_CHILD_SETUP);
		for (int i = 0; i < 4; i++)
			if (dup2(src[i], i) != i)
				_exit(EXIT_CHILD_SETUP);
		execve(path, argv, envp);
		_exit(EXIT_CHILD_SETUP);
	}
	close(sv[1]);
	close(data_fd);
	s->sock = sv[0];
	s->pidfd = (int)syscall(SYS_pidfd_open, s->pid, 0);
	if (s->pidfd < 0)
		die_errno("pidfd_open");
	s->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (s->epfd < 0)
		die_errno("epoll_create1");
	struct epoll_event ev = { .events = EPOLLIN, .data.fd = s->evfd };
	if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->evfd, &ev) != 0)
		die_errno("epoll_ctl eventfd");
	ev.data.fd = s->pidfd;
	if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->pidfd, &ev) != 0)
		die_errno("epoll_ctl pidfd");
}

static void __attribute__((noreturn)) stub_died(struct stub *s)
{
	int status;

	while (waitpid(s->pid, &status, 0) < 0 && errno == EINTR)
		;
	untrack_child(s->pid);
	if (WIFSIGNALED(status))
		die("stub %d was killed by signal %d", s->pid, WTERMSIG(status));
	die("stub %d exited with status %d (see enum stub_exit in stub_abi.h; fatal line %u)",
	    s->pid, WEXITSTATUS(status), s->d->fatal_line);
}

/*
 * Wait until the stub hands the page over, as the asyncio loop does: the
 * eventfd becomes readable, it is read (reset) before the word is looked at,
 * and only an acquire load that finds CONTROLLER counts.
 */
/* What one `pause` costs here, in ns. */
static double pause_ns(void)
{
	uint64_t t0 = now_ns();

	for (int i = 0; i < 4096; i++)
		__builtin_ia32_pause();
	return (double)(now_ns() - t0) / 4096 + 1e-3;
}

static void wait_handover(struct stub *s)
{
	/* A hand-over taken by spinning leaves its eventfd write behind: the next wait reads it. */
	if (spin_for_handover(s))
		return;
	for (;;) {
		struct epoll_event ev[2];
		uint64_t count;
		int n = epoll_wait(s->epfd, ev, 2, WAIT_MS);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			die_errno("epoll_wait");
		}
		if (n == 0)
			die("stub %d did not hand over within %d ms", s->pid, WAIT_MS);
		for (int i = 0; i < n; i++)
			if (ev[i].data.fd == s->pidfd)
				stub_died(s);
		if (read(s->evfd, &count, sizeof(count)) < 0 && errno != EAGAIN)
			die_errno("read eventfd");
		if (handed_over(s->d))
			return;
	}
}

/*
 * Write the command and exchange the word for CHILD; returns whether the stub
 * must be woken: only a stub that said it sleeps (the waiter re-checks the
 * word, so the wake may come later, as it does at the end of a pass).
 */
static int hand_back_later(struct stub *s, uint32_t command)
{
	s->d->command = command;
	s->d->spin_limit = s->spin_pauses;
	s->d->controller_cpu = current_cpu();
	return __atomic_exchange_n(&s->d->handoff, STUB_HANDOFF_CHILD, __ATOMIC_ACQ_REL) ==
	       STUB_HANDOFF_SLEEPING;
}

static void wake(struct stub *s)
{
	if (syscall(SYS_futex, &s->d->handoff, FUTEX_WAKE, 1, NULL, NULL, 0) < 0)
		die_errno("FUTEX_WAKE");
}

static void hand_back(struct stub *s, uint32_t command)
{
	if (hand_back_later(s, command))
		wake(s);
}

/* One sendmsg carrying nfds descriptors; its data is the batch's sequence number. */
static void send_fds(struct stub *s, const int *fds, int nfds, uint32_t seq)
{
	struct iovec iov = { .iov_base = &seq, .iov_len = sizeof(seq) };
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int) * STUB_MAX_FDS)];
	} ctl;
	struct msghdr msg = {
		.msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = ctl.buf,
		.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds),
	};
	struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);

	memset(&ctl, 0, sizeof(ctl));
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
	memcpy(CMSG_DATA(cm), fds, sizeof(int) * (size_t)nfds);
	if (sendmsg(s->sock, &msg, MSG_DONTWAIT) != (ssize_t)sizeof(seq))
		die_errno("sendmsg SCM_RIGHTS");
}

static void record(struct stub *s, uint32_t i, uint32_t op, int32_t slot, uint32_t prot,
		   uint64_t addr, uint64_t length, uint64_t offset)
{
	s->d->records[i] = (struct stub_record){
		.op = op, .fd_slot = slot, .prot = prot, .flags = STUB_MAP_SHARED,
		.addr = addr, .length = length, .offset = offset,
	};
}

/* Run records[0..len) with fds passed alongside; every record must succeed. */
static void run_batch(struct stub *s, uint32_t len, const int *fds, int nfds)
{
	uint32_t seq = s->d->batch_seq + 1;

	if (nfds)
		send_fds(s, fds, nfds, seq);
	s->d->batch_len = len;
	s->d->batch_nfds = (uint32_t)nfds;
	s->d->batch_seq = seq;
	hand_back(s, STUB_CMD_BATCH);
	wait_handover(s);
	if (s->d->batch_errno != 0 || s->d->batch_done != len)
		die("batch: %u of %u records ran, errno %d", s->d->batch_done, len,
		    s->d->batch_errno);
}

/* A pointer into our mapping for a child address inside the alt stack, checked. */
static void *frame_ptr(struct stub *s, uint64_t addr, size_t size)
{
	uint64_t lo = STUB_DATA_ADDR + STUB_ALTSTACK_OFFSET, hi = STUB_DATA_ADDR + STUB_DATA_SIZE;

	if (addr < lo || addr > hi - size)
		die("stub %d: frame address %#" PRIx64 " outside the alt stack", s->pid, addr);
	return s->base + (addr - STUB_DATA_ADDR);
}

/* The current report must be a trapped syscall `nr`; returns the saved registers. */
static struct stub_sigcontext *syscall_report(struct stub *s, int nr)
{
	struct stub_siginfo *si = frame_ptr(s, s->d->siginfo_addr, sizeof(*si));
	struct stub_ucontext *uc = frame_ptr(s, s->d->ucontext_addr, sizeof(*uc));

	if (s->d->signal != SIGSYS || si->u.sys.syscall != nr)
		die("stub %d: expected syscall %d, got signal %d (syscall %d)", s->pid, nr,
		    s->d->signal, si->u.sys.syscall);
	return &uc->mcontext;
}

/* The bootstrap's ready report, then the same clean-up batch aioumm runs. */
static void await_ready(struct stub *s)
{
	wait_handover(s);
	syscall_report(s, SYS_getpid);
	record(s, 0, STUB_OP_MUNMAP, STUB_SLOT_ANON, 0, 0, STUB_AREA_START, 0);
	record(s, 1, STUB_OP_MUNMAP, STUB_SLOT_ANON, 0, STUB_AREA_END,
	       STUB_TASK_TOP - STUB_AREA_END, 0);
	run_batch(s, 2, NULL, 0);
}

static void finish(struct stub *s)
{
	int status;

	kill(s->pid, SIGKILL);
	while (waitpid(s->pid, &status, 0) < 0)
		if (errno != EINTR)
			die_errno("waitpid");
	untrack_child(s->pid);
	if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)
		die("stub %d ended with wait status %#x before it was killed", s->pid, status);
	if (s->epfd >= 0)
		close(s->epfd);
	close(s->pidfd);
	close(s->evfd);
	close(s->sock);
	munmap(s->base, STUB_DATA_SIZE);
}

/*
 * The guest's code page and stack, in one memfd that every stub may map: the
 * loop never touches its stack, and signal frames go to each stub's own
 * alternate stack.
 */
static int guest_memfd(void)
{
	return sealed_memfd("c-stub-guest", asker, sizeof(asker), 4096 + GUEST_STACK_SIZE, 0);
}

/* Map the guest in one batch, and point the frame the batch result left in place at it. */
static void load_guest(struct stub *s, int fd)
{
	struct stub_sigcontext *mc;

	record(s, 0, STUB_OP_MMAP, 0, PROT_READ | PROT_EXEC, GUEST_CODE_ADDR, 4096, 0);
	record(s, 1, STUB_OP_MMAP, 0, PROT_READ | PROT_WRITE, GUEST_STACK_TOP - GUEST_STACK_SIZE,
	       GUEST_STACK_SIZE, 4096);
	run_batch(s, 2, &fd, 1);
	/* The ready report's frame: the next RESUME starts the guest from it. */
	mc = &((struct stub_ucontext *)frame_ptr(s, s->d->ucontext_addr,
						  sizeof(struct stub_ucontext)))->mcontext;
	mc->rip = GUEST_CODE_ADDR;
	mc->rsp = GUEST_STACK_TOP - 64;
}

/* The current report must be the guest's ask number i; returns its registers. */
static struct stub_sigcontext *guest_ask(struct stub *s, uint64_t i)
{
	struct stub_sigcontext *mc = syscall_report(s, GUEST_SYSCALL);

	if (mc->rdi != i)
		die("stub %d, report %" PRIu64 ": the guest asked with rdi = %" PRIu64, s->pid, i,
		    (uint64_t)mc->rdi);
	return mc;
}

static void roundtrip(struct stub *s, uint64_t n, uint64_t *samples)
{
	int fd = guest_memfd();
	struct stub_sigcontext *mc;
	uint64_t prev;

	load_guest(s, fd);
	close(fd);
	hand_back(s, STUB_CMD_RESUME);
	wait_handover(s);
	prev = now_ns();
	for (uint64_t i = 0; i <= n; i++) {
		mc = guest_ask(s, i);
		if (i == n)
			break;	/* asking again proves the last answer passed the guest's check */
		mc->rax = 3 * i + 1;
		hand_back(s, STUB_CMD_RESUME);
		wait_handover(s);
		uint64_t t = now_ns();
		samples[i] = t - prev;
		prev = t;
	}
}

static void flush(struct stub *s, uint64_t n, uint64_t *samples)
{
	int fds[FLUSH_FDS];

	for (int f = 0; f < FLUSH_FDS; f++)
		fds[f] = sealed_memfd("c-stub-flush", NULL, 0,
				      4096 * (FLUSH_PAGES / FLUSH_FDS), 0);
	for (uint64_t k = 0; k < n; k++) {
		uint64_t t0 = now_ns();

		/* Page j comes from file j % 4: neighbours never share a file, nothing merges. */
		for (uint32_t j = 0; j < FLUSH_PAGES; j++)
			record(s, j, STUB_OP_MMAP, (int32_t)(j % FLUSH_FDS), PROT_READ | PROT_WRITE,
			       FLUSH_ADDR + 4096ULL * j, 4096, 4096ULL * (j / FLUSH_FDS));
		run_batch(s, FLUSH_PAGES, fds, FLUSH_FDS);
		samples[k] = now_ns() - t0;
		/* Untimed: empty the range again, so each timed batch maps into nothing. */
		record(s, 0, STUB_OP_MUNMAP, STUB_SLOT_ANON, 0, FLUSH_ADDR, 4096ULL * FLUSH_PAGES, 0);
		run_batch(s, 1, NULL, 0);
	}
	for (int f = 0; f < FLUSH_FDS; f++)
		close(fds[f]);
}

/* What a --stubs run counts besides its samples. */
struct pass_count {
	uint64_t passes, wakes;
};

/* The FUTEX_WAKEs a pass put off until its end: every answer of the pass is written first. */
static void wake_asleep(struct stub **asleep, uint32_t *n, struct pass_count *pc)
{
	for (uint32_t i = 0; i < *n; i++)
		wake(asleep[i]);
	pc->wakes += *n;
	*n = 0;
}

/*
 * Drive k loaded stubs at once, `rounds` round trips each, as aioumm's
 * controller does (futex_bridge.py, "Many stubs, one wake-up"): every
 * eventfd in one epoll set, edge-triggered and never read (each write puts
 * it on the ready list again, so no reset is needed, and a notification
 * after a pass took the eventfd is returned by the next epoll_wait); a pass
 * takes up to PASS ready stubs, answers each whose word it owns, and wakes
 * the ones that said they sleep only at its end, so that on a shared CPU a
 * stub woken at once does not preempt the controller before the next answer
 * is written.  The stub's FUTEX_WAIT re-checks the word, so a late wake is
 * never lost.
 *
 * Round trip m of a stub is a hand-back and the hand-over that follows it:
 * the first starts the guest, which asks 0; round trip m answers ask m - 1,
 * and the guest asks m only once that answer passed its check.  The last
 * ask (rounds - 1) is left unanswered.  Every round trip but the first has
 * a sample, the time between the stub's hand-overs m - 1 and m, which holds
 * the time it spent queued behind the other stubs; the first, the start of
 * the guest, is counted in the rate but not sampled, as aioumm's throughput
 * does it (bench.py).
 */
static void drive(struct stub *st, uint32_t k, uint64_t rounds, uint64_t *samples,
		  struct pass_count *pc)
{
	struct epoll_event ev[PASS];
	uint64_t *seen = calloc(k, sizeof(*seen)), *prev = calloc(k, sizeof(*prev));
	struct stub **asleep = calloc(k, sizeof(*asleep));
	uint32_t left = k, n_asleep = 0;
	int ep = epoll_create1(EPOLL_CLOEXEC);

	if (seen == NULL || prev == NULL || asleep == NULL)
		die("out of memory for %u stubs", k);
	if (ep < 0)
		die_errno("epoll_create1");
	for (uint32_t j = 0; j < k; j++) {
		struct epoll_event e = { .events = EPOLLIN | EPOLLET, .data.u64 = j };

		if (epoll_ctl(ep, EPOLL_CTL_ADD, st[j].evfd, &e) != 0)
			die_errno("epoll_ctl eventfd");
		/* Level-triggered, and told apart by data >= k: a dead stub is reported until reaped. */
		e = (struct epoll_event){ .events = EPOLLIN, .data.u64 = (uint64_t)k + j };
		if (epoll_ctl(ep, EPOLL_CTL_ADD, st[j].pidfd, &e) != 0)
			die_errno("epoll_ctl pidfd");
	}
	/* The first pass starts every guest; its wakes too wait for its end. */
	for (uint32_t j = 0; j < k; j++) {
		if (hand_back_later(&st[j], STUB_CMD_RESUME))
			asleep[n_asleep++] = &st[j];
	}
	wake_asleep(asleep, &n_asleep, pc);
	while (left) {
		int n = epoll_wait(ep, ev, PASS, WAIT_MS);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			die_errno("epoll_wait");
		}
		if (n == 0)
			die("%u of %u stubs did not hand over within %d ms", left, k, WAIT_MS);
		pc->passes++;
		for (int e = 0; e < n; e++) {
			uint64_t j = ev[e].data.u64;
			struct stub *s;
			struct stub_sigcontext *mc;
			uint64_t m, t;

			if (j >= k)
				stub_died(&st[j - k]);
			s = &st[j];
			/* Finished (its last ask stays unanswered), or a spare notification. */
			if (seen[j] == rounds || !handed_over(s->d))
				continue;
			t = now_ns();
			m = seen[j]++;
			mc = guest_ask(s, m);
			if (m)
				samples[j * (rounds - 1) + m - 1] = t - prev[j];
			prev[j] = t;
			if (seen[j] == rounds) {
				left--;
				continue;
			}
			mc->rax = 3 * m + 1;
			if (hand_back_later(s, STUB_CMD_RESUME))
				asleep[n_asleep++] = s;
		}
		wake_asleep(asleep, &n_asleep, pc);
	}
	close(ep);
	free(asleep);
	free(prev);
	free(seen);
}

/*
 * Each stub holds four descriptors while it is set up (channel, eventfd,
 * pidfd, its own epoll set), more than the usual soft limit of 1024 allows
 * for 1024 stubs: raise it to the hard limit, and say so if that is short.
 */
static void raise_nofile(uint32_t k)
{
	uint64_t need = 4ULL * k + 32;
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		die_errno("getrlimit RLIMIT_NOFILE");
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
			die_errno("setrlimit RLIMIT_NOFILE");
	}
	if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need)
		die("--stubs %u needs about %" PRIu64 " descriptors, RLIMIT_NOFILE allows %llu", k,
		    need, (unsigned long long)rl.rlim_cur);
}

/* --stubs K: spawn K stubs, load the guest in each, drive them all at once, print the result. */
static void many(struct opts *o, uint32_t k, const char *bin_dir, int code_fd,
		 uint64_t code_size, uint32_t flags)
{
	uint64_t rounds = o->n / k < 20 ? 20 : o->n / k;
	uint64_t n_samples = (rounds - 1) * k;
	struct stub *st = calloc(k, sizeof(*st));
	struct pass_count pc = { 0, 0 };
	uint64_t *samples, start;
	double wall_s;
	int fd;

	if (st == NULL)
		die("out of memory for %u stubs", k);
	raise_nofile(k);
	o->n = rounds * k;	/* every round trip counts, so that rt/s = n / wall_s */
	samples = shared_samples(n_samples);
	/* All forked first: they boot in parallel while the first ones are set up. */
	for (uint32_t j = 0; j < k; j++)
		spawn(&st[j], o, bin_dir, code_fd, code_size, flags);
	close(code_fd);
	fd = guest_memfd();
	for (uint32_t j = 0; j < k; j++) {
		await_ready(&st[j]);
		load_guest(&st[j], fd);
		/* From now on only the one set watches the eventfd: one epoll wake-up per write. */
		close(st[j].epfd);
		st[j].epfd = -1;
	}
	close(fd);

	start = now_ns();
	drive(st, k, rounds, samples, &pc);
	wall_s = (double)(now_ns() - start) / 1e9;
	for (uint32_t j = 0; j < k; j++)
		finish(&st[j]);
	free(st);

	struct stats stats = compute_stats(samples, n_samples);
	print_result("c_stub", o, &stats, wall_s,
		     "\"mechanism\": \"aioumm stub, eventfds in one edge-triggered epoll set,"
		     " FUTEX_WAKEs at the end of each pass\", \"init_flags\": %u, \"spin_ns\": 0"
		     ", \"stubs\": %u, \"rounds_per_stub\": %" PRIu64 ", \"samples\": %" PRIu64
		     ", \"passes\": %" PRIu64 ", \"wakes\": %" PRIu64,
		     flags, k, rounds, n_samples, pc.passes, pc.wakes);
}

/* Default: the package's _bin directory, found from this program's place in the tree. */
static void default_bin_dir(char *out, size_t size)
{
	char exe[PATH_MAX];
	ssize_t len = readlink("/proc/self/exe", exe, sizeof(exe) - 1);

	if (len < 0)
		die_errno("readlink /proc/self/exe");
	exe[len] = 0;
	/* .../benchmarks/refs/build/c_stub -> .../aioumm/_bin */
	snprintf(out, size, "%s/../../../aioumm/_bin", dirname(exe));
}

int main(int argc, char **argv)
{
	struct opts o = { .n = 100000, .same_core = 0, .can_apart = 1 };
	char bin_dir[PATH_MAX] = "";
	int flush_mode = 0, n_set = 0;
	uint64_t spin_ns = 0;
	unsigned long stubs = 1;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-n") == 0)
			n_set = 1;
		if (common_option(&o, argc, argv, &i, EXTRA_USAGE))
			continue;
		if (strcmp(argv[i], "--mode") == 0 && i + 1 < argc) {
			const char *v = argv[++i];

			if (strcmp(v, "flush") == 0)
				flush_mode = 1;
			else if (strcmp(v, "roundtrip") != 0)
				usage(EXTRA_USAGE);
			continue;
		}
		if (strcmp(argv[i], "--spin") == 0 && i + 1 < argc) {
			spin_ns = strtoull(argv[++i], NULL, 10);
			continue;
		}
		if (strcmp(argv[i], "--bin-dir") == 0 && i + 1 < argc) {
			snprintf(bin_dir, sizeof(bin_dir), "%s", argv[++i]);
			continue;
		}
		if (strcmp(argv[i], "--stubs") == 0 && i + 1 < argc) {
			char *end;

			stubs = strtoul(argv[++i], &end, 10);
			if (*end || stubs == 0 || stubs > MAX_TRACKED_CHILDREN)
				usage(EXTRA_USAGE);
			continue;
		}
		usage(EXTRA_USAGE);
	}
	/* aioumm spins only while one stub alone runs, and flushes one stub at a time. */
	if (stubs > 1 && (flush_mode || spin_ns)) {
		fprintf(stderr, "--stubs K > 1 takes neither --mode flush nor --spin\n");
		usage(EXTRA_USAGE);
	}
	if (flush_mode && !n_set)
		o.n = 10000;
	if (!bin_dir[0])
		default_bin_dir(bin_dir, sizeof(bin_dir));
	apply_placement(&o);

	uint64_t code_size;
	int code_fd = code_memfd(bin_dir, &code_size);
	uint32_t flags = init_flags();

	if (stubs > 1) {
		many(&o, (uint32_t)stubs, bin_dir, code_fd, code_size, flags);
		return 0;
	}

	uint64_t *samples = shared_samples(o.n);
	struct stub s;

	spawn(&s, &o, bin_dir, code_fd, code_size, flags);
	s.spin_ns = spin_ns;
	s.spin_pauses = spin_ns ? (uint32_t)(spin_ns / pause_ns() + 1) : 0;
	if (s.spin_pauses > STUB_SPIN_MAX)
		s.spin_pauses = STUB_SPIN_MAX;
	close(code_fd);
	await_ready(&s);

	uint64_t start = now_ns();
	if (flush_mode)
		flush(&s, o.n, samples);
	else
		roundtrip(&s, o.n, samples);
	double wall_s = (double)(now_ns() - start) / 1e9;
	finish(&s);

	struct stats st = compute_stats(samples, o.n);
	if (flush_mode)
		print_result("c_stub_flush", &o, &st, wall_s,
			     "\"mechanism\": \"aioumm stub, eventfd + epoll, FUTEX_WAKE\""
			     ", \"records\": %d, \"fds\": %d, \"init_flags\": %u",
			     FLUSH_PAGES, FLUSH_FDS, flags);
	else
		print_result("c_stub", &o, &st, wall_s,
			     "\"mechanism\": \"aioumm stub, eventfd + epoll, FUTEX_WAKE\""
			     ", \"init_flags\": %u, \"spin_ns\": %" PRIu64, flags, spin_ns);
	return 0;
}

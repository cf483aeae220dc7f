/*
 * stub_bootstrap.c - the executable a controller spawns to make a stub.
 *
 * It expects the descriptors of stub_abi.h at fixed numbers (the FD-passing
 * socket at 0, the eventfd at 1, the code memfd at 2, the data memfd at 3),
 * reads the init message, maps the stub pages, installs the signal handlers
 * and the seccomp filter, and makes one syscall: that traps, and the
 * handler's first report ("ready") reaches the controller.  The controller
 * then unmaps this image, its stack, the vDSO and vvar, leaving nothing but
 * the stub pages.
 *
 * Every step that can fail exits with its own code (enum stub_exit), and
 * init.inject_exit makes the step with that code fail on purpose, so the
 * controller's explanation of each code can be tested for real.
 */
#include "stub_sys.h"

static const int handled_signals[] = { SIGSEGV, SIGSYS, SIGALRM, SIGTRAP, SIGILL, SIGFPE };
static const int sigaction_exits[] = {
	STUB_EXIT_SIGACTION_SEGV, STUB_EXIT_SIGACTION_SYS, STUB_EXIT_SIGACTION_ALRM,
	STUB_EXIT_SIGACTION_TRAP, STUB_EXIT_SIGACTION_ILL, STUB_EXIT_SIGACTION_FPE,
};

static struct stub_init init;

static __attribute__((noreturn)) void die(int code)
{
	for (;;)
		stub_syscall1(__NR_exit_group, code);
}

/* Fail with `code` when `failed`, or when the controller injects that code. */
static void step(int failed, int code)
{
	if (failed || init.inject_exit == (uint32_t)code)
		die(code);
}

static uint64_t auxv_value(unsigned long *auxv, unsigned long type, uint64_t fallback)
{
	for (; auxv[0] != STUB_AT_NULL; auxv += 2)
		if (auxv[0] == type)
			return auxv[1];
	return fallback;
}

/* Classic BPF, built into a fixed buffer. */
#define FILTER_MAX 256
static struct sock_filter filter[FILTER_MAX];
static unsigned int filter_len;

static void emit(uint16_t code, uint32_t k, uint8_t jt, uint8_t jf)
{
	step(filter_len >= FILTER_MAX, STUB_EXIT_FILTER_SIZE);
	filter[filter_len++] = (struct sock_filter){ code, jt, jf, k };
}

#define LD(off) emit(BPF_LD | BPF_W | BPF_ABS, (off), 0, 0)
#define ARG_LO(i) (offsetof(struct seccomp_data, args) + 8 * (i))
#define ARG_HI(i) (ARG_LO(i) + 4)
#define IP_LO offsetof(struct seccomp_data, instruction_pointer)
#define IP_HI (IP_LO + 4)

/*
 * One block per site: syscall number, then the exact instruction pointer,
 * then the argument checks; all match -> allow, any mismatch -> the next
 * block.  Jumps are relative, so each comparison jumps by what is left of
 * its block.
 */
static void emit_site(const struct stub_site *site)
{
	unsigned int nchecks = 0, len, start = filter_len;

	while (nchecks < STUB_SITE_MAX_CHECKS && site->checks[nchecks].op)
		nchecks++;
	len = 7 + 4 * nchecks;
#define SKIP ((uint8_t)(len - (filter_len - start) - 1))
	LD(offsetof(struct seccomp_data, nr));
	emit(BPF_JMP | BPF_JEQ | BPF_K, site->nr, 0, SKIP);
	LD(IP_LO);
	emit(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)site->ip, 0, SKIP);
	LD(IP_HI);
	emit(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)(site->ip >> 32), 0, SKIP);
	for (unsigned int i = 0; i < nchecks; i++) {
		const struct stub_arg_check *c = &site->checks[i];

		step(c->arg > 5, STUB_EXIT_CODE_IMAGE);
		LD(ARG_HI(c->arg));
		emit(BPF_JMP | BPF_JEQ | BPF_K,
		     c->op == STUB_CHECK_EQ ? (uint32_t)(c->value >> 32) : 0, 0, SKIP);
		LD(ARG_LO(c->arg));
		emit(BPF_JMP | (c->op == STUB_CHECK_EQ ? BPF_JEQ : BPF_JGE) | BPF_K,
		     (uint32_t)c->value, 0, SKIP);
	}
	emit(BPF_RET | BPF_K, SECCOMP_RET_ALLOW, 0, 0);
#undef SKIP
}

static void build_filter(const struct stub_code_header *hdr)
{
	/* Any other architecture (i386 int 0x80 from a 64-bit task) dies. */
	LD(offsetof(struct seccomp_data, arch));
	emit(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0);
	emit(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS, 0, 0);

	for (uint32_t i = 0; i < hdr->nsites; i++)
		emit_site(&hdr->sites[i]);

	/*
	 * Not an allowed site: from inside the stub code that is an attack or
	 * a bug, and the process dies; from anywhere else it is a guest
	 * syscall, trapped as SIGSYS for the controller.
	 */
	LD(IP_HI);
	emit(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)(STUB_CODE_ADDR >> 32), 0, 4);
	LD(IP_LO);
	emit(BPF_JMP | BPF_JGE | BPF_K, (uint32_t)STUB_CODE_ADDR, 0, 2);
	emit(BPF_JMP | BPF_JGE | BPF_K, (uint32_t)(STUB_CODE_ADDR + STUB_CODE_SIZE), 1, 0);
	emit(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS, 0, 0);
	emit(BPF_RET | BPF_K, SECCOMP_RET_TRAP, 0, 0);
}

static void bootstrap(unsigned long *sp)
{
	unsigned long argc = sp[0];
	unsigned long *envp = sp + 1 + argc + 1;
	unsigned long *auxv = envp;
	const struct stub_code_header *hdr = (const void *)STUB_CODE_ADDR;
	struct stub_data *d = (struct stub_data *)STUB_DATA_ADDR;
	uint64_t minsig;
	long res, ppid;

	while (*auxv)
		auxv++;
	auxv++;

	/* A controller already gone shows as EOF here ... */
	ppid = stub_syscall0(__NR_getppid);
	do
		res = stub_syscall3(__NR_read, STUB_FD_CHANNEL, &init, sizeof(init));
	while (res == -EINTR);
	if (res != sizeof(init))
		die(STUB_EXIT_INIT_READ);
	step(init.magic != STUB_INIT_MAGIC, STUB_EXIT_INIT_MAGIC);
	step(init.abi_version != STUB_ABI_VERSION, STUB_EXIT_INIT_VERSION);

	/* ... and one that dies after it as a new parent: die with it either way. */
	step(stub_syscall2(__NR_prctl, PR_SET_PDEATHSIG, SIGKILL) != 0 ||
	     stub_syscall0(__NR_getppid) != ppid, STUB_EXIT_PDEATHSIG);
	step(stub_syscall2(__NR_prctl, PR_SET_NO_NEW_PRIVS, 1) != 0, STUB_EXIT_NO_NEW_PRIVS);
	stub_syscall2(__NR_prctl, PR_SET_NAME, "aioumm-stub");

	res = stub_syscall6(__NR_mmap, STUB_CODE_ADDR, STUB_CODE_SIZE, PROT_READ | PROT_EXEC,
			    MAP_SHARED | MAP_FIXED_NOREPLACE, STUB_FD_CODE, 0);
	step(res != STUB_CODE_ADDR, STUB_EXIT_MAP_CODE);
	step(init.code_size > STUB_CODE_SIZE || hdr->magic != STUB_CODE_MAGIC ||
	     hdr->abi_version != STUB_ABI_VERSION || hdr->nsites > STUB_MAX_SITES,
	     STUB_EXIT_CODE_IMAGE);

	res = stub_syscall6(__NR_mmap, STUB_DATA_ADDR, STUB_DATA_SIZE, PROT_READ | PROT_WRITE,
			    MAP_SHARED | MAP_FIXED_NOREPLACE, STUB_FD_DATA, 0);
	step(res != STUB_DATA_ADDR, STUB_EXIT_MAP_DATA);
	d->flags = init.flags;

	/* Sealed: nothing, not even a guest that jumps into the handler, can remap them. */
	if (init.flags & STUB_INIT_SEAL)
		step(stub_syscall3(__NR_mseal, STUB_AREA_START, STUB_AREA_END - STUB_AREA_START,
				   0) != 0, STUB_EXIT_SEAL);

	/* From here on only the channel and the eventfd stay open. */
	step(stub_syscall3(__NR_close_range, STUB_FD_FIRST_PASSED, ~0U, 0) != 0,
	     STUB_EXIT_CLOSE_RANGE);
	step(stub_syscall3(__NR_fcntl, STUB_FD_CHANNEL, F_SETFL, O_NONBLOCK) != 0 ||
	     stub_syscall3(__NR_fcntl, STUB_FD_EVENT, F_SETFL, O_NONBLOCK) != 0,
	     STUB_EXIT_NONBLOCK);

	minsig = auxv_value(auxv, STUB_AT_MINSIGSTKSZ, 2048);
	step(minsig + STUB_ALTSTACK_HEADROOM > STUB_ALTSTACK_SIZE, STUB_EXIT_ALTSTACK_SIZE);
	{
		struct stub_stack_t ss = {
			.sp = (void *)(STUB_DATA_ADDR + STUB_ALTSTACK_OFFSET),
			.flags = 0,
			.size = STUB_ALTSTACK_SIZE,
		};
		step(stub_syscall2(__NR_sigaltstack, &ss, 0) != 0, STUB_EXIT_SIGALTSTACK);
	}

	for (unsigned int i = 0; i < sizeof(handled_signals) / sizeof(handled_signals[0]); i++) {
		/* Every signal masked while the handler runs: it must never nest. */
		struct stub_sigaction sa = {
			.handler = (void *)hdr->handler,
			.flags = SA_SIGINFO | SA_ONSTACK | SA_RESTORER,
			.restorer = (void *)hdr->restorer,
			.mask = ~0ULL,
		};
		step(stub_syscall4(__NR_rt_sigaction, handled_signals[i], &sa, 0, 8) != 0,
		     sigaction_exits[i]);
	}
	{
		uint64_t none = 0;

		step(stub_syscall4(__NR_rt_sigprocmask, SIG_SETMASK, &none, 0, 8) != 0,
		     STUB_EXIT_SIGMASK);
	}

	build_filter(hdr);
	/* Past this point exit_group itself traps: injected failures must happen first. */
	step(0, STUB_EXIT_SECCOMP);
	step(0, STUB_EXIT_NOT_TRAPPED);
	{
		struct sock_fprog prog = { .len = (unsigned short)filter_len, .filter = filter };

		step(stub_syscall3(__NR_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0,
		     STUB_EXIT_SECCOMP);
	}

	/* Traps: the handler reports "ready" and never comes back here. */
	stub_syscall0(__NR_getpid);
	die(STUB_EXIT_NOT_TRAPPED);
}

__asm__(".text\n"
	".globl _start\n"
	"_start:\n"
	"	xorl %ebp, %ebp\n"
	"	movq %rsp, %rdi\n"
	"	andq $-16, %rsp\n"
	"	call stub_bootstrap_main\n"
	"	ud2\n");

__attribute__((used, noreturn)) void stub_bootstrap_main(unsigned long *sp)
{
	bootstrap(sp);
	die(STUB_EXIT_NOT_TRAPPED);
}

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

/* Signal delivery cases: each prints what it saw; a native run is the reference. */
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

static void say(const char *fmt, ...)
{
	char buf[256];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (write(1, buf, (size_t)n) < 0)
		_exit(99);
}

static void on(int sig, void (*fn)(int, siginfo_t *, void *), int flags)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = fn;
	sa.sa_flags = SA_SIGINFO | flags;
	sigemptyset(&sa.sa_mask);
	if (sigaction(sig, &sa, NULL))
		_exit(98);
}

static unsigned long blocked_now(void)
{
	sigset_t s;
	sigprocmask(SIG_BLOCK, NULL, &s);
	return *(unsigned long *)&s;
}

/* ---- siginfo: what a SA_SIGINFO handler sees */
static void h_info(int sig, siginfo_t *si, void *ctx)
{
	ucontext_t *uc = ctx;
	struct sigaction cur;
	sigaction(sig, NULL, &cur);
	say("sig=%d signo=%d code=%d pid_ok=%d\n", sig, si->si_signo, si->si_code, si->si_pid == getpid());
	say("frame_align=%lu\n", (unsigned long)((uintptr_t)__builtin_frame_address(0) % 16));
	say("ret_is_restorer=%d\n", __builtin_return_address(0) == (void *)cur.sa_restorer);
	say("info_after_uc=%ld\n", (long)((char *)si - (char *)uc));
	say("uc_flags=%lu link=%p ss_flags=%d\n", uc->uc_flags, (void *)uc->uc_link, uc->uc_stack.ss_flags);
	say("fpregs_aligned=%d fpregs_above=%d\n", (int)((uintptr_t)uc->uc_mcontext.fpregs % 64 == 0),
	    (char *)uc->uc_mcontext.fpregs > (char *)si);
	say("uc_sigmask=%lx now=%lx\n", *(unsigned long *)&uc->uc_sigmask, blocked_now());
	say("rip_nonzero=%d rsp_above=%d cs=%#x\n", uc->uc_mcontext.gregs[REG_RIP] != 0,
	    (uintptr_t)uc->uc_mcontext.gregs[REG_RSP] > (uintptr_t)uc->uc_mcontext.fpregs,
	    (unsigned)(uc->uc_mcontext.gregs[REG_CSGSFS] & 0xffff));
}

static int c_siginfo(void)
{
	on(SIGUSR1, h_info, 0);
	raise(SIGUSR1);
	say("after mask=%lx\n", blocked_now());
	return 0;
}

/* ---- altstack */
static char *alt;
static void h_alt(int sig, siginfo_t *si, void *ctx)
{
	ucontext_t *uc = ctx;
	stack_t now, nw;
	char here;
	(void)si;
	sigaltstack(NULL, &now);
	nw.ss_sp = alt;
	nw.ss_size = 65536;
	nw.ss_flags = 0;
	int r = sigaltstack(&nw, NULL);
	say("sig=%d on_alt=%d flags_now=%d uc_ss_flags=%d change=%d/%d\n", sig,
	    &here > alt && &here < alt + 65536, now.ss_flags, uc->uc_stack.ss_flags, r, r ? errno : 0);
}

static int c_altstack(void)
{
	stack_t ss, old;
	alt = malloc(65536);
	ss.ss_sp = alt;
	ss.ss_size = 1024;
	ss.ss_flags = 0;
	int r = sigaltstack(&ss, NULL);
	say("small=%d/%d\n", r, errno);
	ss.ss_size = 65536;
	say("set=%d\n", sigaltstack(&ss, NULL));
	on(SIGUSR1, h_alt, SA_ONSTACK);
	raise(SIGUSR1);
	sigaltstack(NULL, &old);
	say("after flags=%d size=%zu same=%d\n", old.ss_flags, old.ss_size, old.ss_sp == alt);
	ss.ss_flags = SS_DISABLE;
	say("disable=%d\n", sigaltstack(&ss, NULL));
	sigaltstack(NULL, &old);
	say("disabled flags=%d\n", old.ss_flags);
	return 0;
}

/* ---- SIGSEGV, SIGFPE handlers that siglongjmp out */
static sigjmp_buf jb;
static char *base;
static void h_jump(int sig, siginfo_t *si, void *ctx)
{
	ucontext_t *uc = ctx;
	say("sig=%d code=%d addr=%#lx addr_is_rip=%d\n", sig, si->si_code,
	    (unsigned long)((char *)si->si_addr - base),
	    (uintptr_t)si->si_addr == (uintptr_t)uc->uc_mcontext.gregs[REG_RIP]);
	siglongjmp(jb, sig);
}

static int c_segv(void)
{
	on(SIGSEGV, h_jump, 0);
	if (sigsetjmp(jb, 1) == 0)
		*(volatile int *)16 = 1;
	say("back, mask=%lx\n", blocked_now());
	char *ro = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	base = ro;
	if (sigsetjmp(jb, 1) == 0)
		*(volatile char *)(ro + 8) = 1;
	say("back again ro_off=%ld\n", 8L);
	return 0;
}

static int c_fpe(void)
{
	volatile int zero = 0, one = 1;
	base = (char *)c_fpe;
	on(SIGFPE, h_jump, 0);
	if (sigsetjmp(jb, 1) == 0)
		say("%d\n", one / zero);
	say("back\n");
	return 0;
}

/* ---- masks */
static void h_say(int sig, siginfo_t *si, void *ctx)
{
	(void)si;
	(void)ctx;
	say("handler %d\n", sig);
}

static int c_mask(void)
{
	sigset_t s, p;
	on(SIGUSR1, h_say, 0);
	sigemptyset(&s);
	sigaddset(&s, SIGUSR1);
	sigaddset(&s, SIGKILL);
	sigprocmask(SIG_BLOCK, &s, NULL);
	say("blocked=%lx\n", blocked_now());
	raise(SIGUSR1);
	say("raised\n");
	sigpending(&p);
	say("pending=%d\n", sigismember(&p, SIGUSR1));
	sigprocmask(SIG_UNBLOCK, &s, NULL);
	say("unblocked\n");
	sigpending(&p);
	say("pending=%d\n", sigismember(&p, SIGUSR1));
	return 0;
}

/* ---- SA_RESTART vs EINTR on a pipe read */
static int pfd[2];
static volatile int alarms;
static void h_alarm(int sig, siginfo_t *si, void *ctx)
{
	(void)sig;
	(void)ctx;
	alarms++;
	say("alarm %d code=%d\n", alarms, si->si_code);
	if (alarms == 2) {
		if (write(pfd[1], "x", 1) != 1)
			_exit(97);
	} else {
		struct itimerval soon = {{0, 0}, {0, 100000}};
		setitimer(ITIMER_REAL, &soon, NULL);
	}
}

static int c_pipe(int flags)
{
	char c;
	if (pipe(pfd))
		return 1;
	on(SIGALRM, h_alarm, flags);
	alarm(1);
	ssize_t n = read(pfd[0], &c, 1);
	say("read=%zd errno=%s alarms=%d\n", n, n < 0 ? strerrorname_np(errno) : "-", alarms);
	alarm(0);
	return 0;
}

/* ---- nested handlers, SA_NODEFER */
static int depth, rounds;
static void h_usr2(int sig, siginfo_t *si, void *ctx)
{
	(void)si;
	(void)ctx;
	say("usr2 %d mask=%lx\n", sig, blocked_now());
}

static void h_usr1(int sig, siginfo_t *si, void *ctx)
{
	(void)si;
	(void)ctx;
	depth++;
	rounds++;
	say("usr1 start depth=%d mask=%lx\n", depth, blocked_now());
	if (rounds == 1) {
		raise(SIGUSR2);
		raise(SIGUSR1);
	}
	say("usr1 end depth=%d\n", depth);
	depth--;
	(void)sig;
}

static int c_nested(int flags)
{
	on(SIGUSR1, h_usr1, flags);
	on(SIGUSR2, h_usr2, 0);
	raise(SIGUSR1);
	say("done mask=%lx\n", blocked_now());
	return 0;
}

/* ---- a handler that changes where and how the program goes on */
static void h_ill(int sig, siginfo_t *si, void *ctx)
{
	ucontext_t *uc = ctx;
	say("sig=%d code=%d\n", sig, si->si_code);
	uc->uc_mcontext.gregs[REG_RIP] += 2; /* past ud2 */
	uc->uc_mcontext.gregs[REG_RAX] = 42;
	uc->uc_mcontext.gregs[REG_RBX] = 7;
}

static int c_context(void)
{
	long a = 1, b = 2;
	on(SIGILL, h_ill, 0);
	__asm__ volatile("ud2" : "+a"(a), "+b"(b));
	say("rax=%ld rbx=%ld\n", a, b);
	return 0;
}

/* ---- vector registers survive a handler; the handler starts with a clean state */
static void h_xmm(int sig, siginfo_t *si, void *ctx)
{
	unsigned long v;
	unsigned int csr;
	(void)sig;
	(void)si;
	(void)ctx;
	__asm__ volatile("movq %%xmm8, %0; stmxcsr %1" : "=r"(v), "=m"(csr));
	say("handler xmm8=%lx mxcsr=%#x\n", v, csr);
	__asm__ volatile("pcmpeqd %%xmm8, %%xmm8; pcmpeqd %%xmm0, %%xmm0" ::: "xmm0", "xmm8");
	unsigned int other = 0x7f80;
	__asm__ volatile("ldmxcsr %0" ::"m"(other));
}

static int c_xmm(void)
{
	unsigned long in = 0x1122334455667788UL, out0 = 0, out8 = 0;
	unsigned int csr = 0x3f80, csr_after = 0;
	on(SIGUSR1, h_xmm, 0);
	long pid = getpid();
	__asm__ volatile(
		"ldmxcsr %[csr]\n\t"
		"movq %[in], %%xmm8\n\t"
		"movq %[in], %%xmm0\n\t"
		"mov $62, %%eax\n\t"
		"mov %[pid], %%rdi\n\t"
		"mov $10, %%esi\n\t"
		"syscall\n\t"
		"movq %%xmm8, %[o8]\n\t"
		"movq %%xmm0, %[o0]\n\t"
		"stmxcsr %[csra]\n\t"
		: [o8] "=r"(out8), [o0] "=r"(out0), [csra] "=m"(csr_after)
		: [in] "r"(in), [pid] "r"(pid), [csr] "m"(csr)
		: "rax", "rdi", "rsi", "rcx", "r11", "xmm0", "xmm8", "memory");
	say("xmm8=%lx xmm0=%lx mxcsr=%#x\n", out8, out0, csr_after);
	return 0;
}

/* ---- SIGTERM */
static int c_term(int handled)
{
	if (handled)
		on(SIGTERM, h_say, 0);
	raise(SIGTERM);
	say("survived\n");
	return 0;
}

/* ---- hostile frames */
static void h_badrip(int sig, siginfo_t *si, void *ctx)
{
	ucontext_t *uc = ctx;
	(void)sig;
	(void)si;
	uc->uc_mcontext.gregs[REG_RIP] = (greg_t)0x8000000000001000UL;
}

static void h_badfp(int sig, siginfo_t *si, void *ctx)
{
	ucontext_t *uc = ctx;
	(void)sig;
	(void)si;
	uc->uc_mcontext.fpregs = (fpregset_t)(uintptr_t)0x10;
}

static int c_hostile(const char *how)
{
	say("start\n");
	if (!strcmp(how, "rsp")) {
		__asm__ volatile("mov $0x1000, %%rsp; mov $15, %%eax; syscall" ::: "memory");
	} else {
		on(SIGUSR1, !strcmp(how, "rip") ? h_badrip : h_badfp, 0);
		raise(SIGUSR1);
	}
	say("not reached\n");
	return 0;
}

/* ---- sigsuspend, pause, nanosleep */
static int c_suspend(void)
{
	sigset_t s, none;
	struct timespec req = {5, 0}, rem = {0, 0};
	struct itimerval it = {{0, 0}, {0, 100000}};
	on(SIGALRM, h_say, SA_RESTART);
	sigemptyset(&s);
	sigaddset(&s, SIGALRM);
	sigprocmask(SIG_BLOCK, &s, NULL);
	setitimer(ITIMER_REAL, &it, NULL);
	sigemptyset(&none);
	int r = sigsuspend(&none);
	say("sigsuspend=%d %s mask=%lx\n", r, strerrorname_np(errno), blocked_now());
	sigprocmask(SIG_UNBLOCK, &s, NULL);
	setitimer(ITIMER_REAL, &it, NULL);
	r = pause();
	say("pause=%d %s\n", r, strerrorname_np(errno));
	setitimer(ITIMER_REAL, &it, NULL);
	r = nanosleep(&req, &rem);
	say("nanosleep=%d %s rem=%ld\n", r, strerrorname_np(errno), (long)rem.tv_sec);
	return 0;
}

/* ---- SIGCHLD, SIGPIPE */
static volatile int chld;
static void h_chld(int sig, siginfo_t *si, void *ctx)
{
	(void)ctx;
	say("sig=%d code=%d status=%d pid_ok=%d\n", sig, si->si_code, si->si_status, si->si_pid > 0);
	chld = 1;
}

static int c_chld(void)
{
	sigset_t s, none;
	on(SIGCHLD, h_chld, 0);
	sigemptyset(&s);
	sigaddset(&s, SIGCHLD);
	sigprocmask(SIG_BLOCK, &s, NULL);
	pid_t pid = fork();
	if (pid == 0)
		_exit(3);
	sigemptyset(&none);
	while (!chld)
		sigsuspend(&none);
	int st = 0;
	int ok = waitpid(pid, &st, 0) == pid;
	say("waited=%d status=%d\n", ok, WEXITSTATUS(st));
	return 0;
}

static int c_pipe_broken(void)
{
	int p[2];
	if (pipe(p))
		return 1;
	close(p[0]);
	on(SIGPIPE, h_say, 0);
	ssize_t n = write(p[1], "x", 1);
	say("write=%zd %s\n", n, strerrorname_np(errno));
	return 0;
}

int main(int argc, char **argv)
{
	const char *c = argc > 1 ? argv[1] : "";
	if (!strcmp(c, "siginfo")) return c_siginfo();
	if (!strcmp(c, "altstack")) return c_altstack();
	if (!strcmp(c, "segv")) return c_segv();
	if (!strcmp(c, "fpe")) return c_fpe();
	if (!strcmp(c, "mask")) return c_mask();
	if (!strcmp(c, "restart")) return c_pipe(SA_RESTART);
	if (!strcmp(c, "eintr")) return c_pipe(0);
	if (!strcmp(c, "nested")) return c_nested(0);
	if (!strcmp(c, "nodefer")) return c_nested(SA_NODEFER);
	if (!strcmp(c, "context")) return c_context();
	if (!strcmp(c, "xmm")) return c_xmm();
	if (!strcmp(c, "term")) return c_term(1);
	if (!strcmp(c, "termdfl")) return c_term(0);
	if (!strcmp(c, "hostile") && argc > 2) return c_hostile(argv[2]);
	if (!strcmp(c, "suspend")) return c_suspend();
	if (!strcmp(c, "chld")) return c_chld();
	if (!strcmp(c, "sigpipe")) return c_pipe_broken();
	return 2;
}

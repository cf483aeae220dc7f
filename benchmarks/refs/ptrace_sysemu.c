/*
 * ptrace_sysemu: a tracer answers the guest's syscalls with PTRACE_SYSEMU.
 *
 * This is how User-Mode Linux's ptrace mode serves its processes. Resumed
 * with PTRACE_SYSEMU, the guest stops at the entry of its next syscall and
 * the kernel then skips the call; the tracer reads the registers, writes
 * the answer into RAX and resumes the guest, which sees it as the
 * syscall's result. One round trip: guest -> tracer -> guest, plus
 * PTRACE_GETREGS and one PTRACE_POKEUSER.
 *
 * Any other syscall the guest makes (its final exit_group, a clock read if
 * the clock had no vDSO) is run for real: the tracer rewinds RIP over the
 * 2-byte syscall instruction, restores RAX to the syscall number and lets it
 * run again under PTRACE_SYSCALL, where it is not skipped.
 */
#include "common.h"

#include <stddef.h>
#include <sys/ptrace.h>
#include <sys/user.h>

/* Where the tracer is in the guest's current syscall. */
enum trace_state {
	EMULATING,    /* next stop: a SYSEMU entry stop, the call will be skipped */
	REPLAY_ENTRY, /* next stop: entry of a call being run for real */
	REPLAY_EXIT,  /* next stop: exit of that call */
};

#define SYSCALL_INSN_LEN 2

static void run_guest(uint64_t n, uint64_t *samples)
{
	if (ptrace(PTRACE_TRACEME, 0, NULL, NULL) != 0)
		_exit(EXIT_CHILD_SETUP);
	/* Stop once so the tracer can set its options before the first syscall. */
	raise(SIGSTOP);
	guest_loop(n, samples);
	_exit(0);
}

static int wait_stop(pid_t pid)
{
	int status;

	while (waitpid(pid, &status, __WALL) < 0) {
		if (errno != EINTR)
			die_errno("waitpid");
	}
	return status;
}

/*
 * A ptrace request failed. ESRCH means the guest is gone (killed from
 * outside while stopped): report how it ended rather than the errno.
 */
static void __attribute__((noreturn)) ptrace_failed(const char *what, pid_t pid)
{
	if (errno == ESRCH) {
		int status = wait_stop(pid);
		untrack_child(pid);
		if (WIFEXITED(status) || WIFSIGNALED(status))
			check_clean_exit(status, "guest");
	}
	die_errno(what);
}

int main(int argc, char **argv)
{
	struct opts o = {.n = 100000, .same_core = 0, .can_apart = 1};

	for (int i = 1; i < argc; i++) {
		if (!common_option(&o, argc, argv, &i, ""))
			usage("");
	}
	apply_placement(&o);

	uint64_t *samples = shared_samples(o.n);
	pid_t pid = fork_child();

	if (pid == 0) {
		if (apply_child_placement(&o) != 0)
			_exit(EXIT_CHILD_SETUP);
		run_guest(o.n, samples);
	}

	int status = wait_stop(pid);
	if (!WIFSTOPPED(status) || WSTOPSIG(status) != SIGSTOP)
		die("guest did not stop for tracing (status %#x)", status);
	/*
	 * TRACESYSGOOD tells syscall stops from signal stops. EXITKILL kills the
	 * guest if this tracer dies; without it the guest would be detached and
	 * run on with its trapped calls failing.
	 */
	if (ptrace(PTRACE_SETOPTIONS, pid, NULL,
		   (void *)(long)(PTRACE_O_TRACESYSGOOD | PTRACE_O_EXITKILL)) != 0)
		ptrace_failed("PTRACE_SETOPTIONS", pid);

	const long rax_offset = offsetof(struct user, regs) + offsetof(struct user_regs_struct, rax);
	enum trace_state state = EMULATING;
	enum __ptrace_request resume = PTRACE_SYSEMU;
	uint64_t next = 0, stops = 0, replayed = 0;
	uint64_t start = now_ns();

	for (;;) {
		if (ptrace(resume, pid, NULL, NULL) != 0)
			ptrace_failed("ptrace resume", pid);
		status = wait_stop(pid);
		if (WIFEXITED(status) || WIFSIGNALED(status))
			break;
		if (!WIFSTOPPED(status) || WSTOPSIG(status) != (SIGTRAP | 0x80))
			die("guest stopped outside a syscall (status %#x)", status);
		stops++;

		if (state == REPLAY_ENTRY) {
			resume = PTRACE_SYSCALL;
			state = REPLAY_EXIT;
			continue;
		}
		if (state == REPLAY_EXIT) {
			resume = PTRACE_SYSEMU;
			state = EMULATING;
			continue;
		}

		struct user_regs_struct regs;
		if (ptrace(PTRACE_GETREGS, pid, NULL, &regs) != 0)
			ptrace_failed("PTRACE_GETREGS", pid);
		if (regs.orig_rax == TRAP_NR) {
			if (regs.rdi != next)
				die("guest call %" PRIu64 " carried index %llu", next, regs.rdi);
			if (ptrace(PTRACE_POKEUSER, pid, (void *)rax_offset,
				   (void *)answer_for(next)) != 0)
				ptrace_failed("PTRACE_POKEUSER rax", pid);
			next++;
			continue;
		}
		/* Not ours: put the call back and let it run natively. */
		regs.rip -= SYSCALL_INSN_LEN;
		regs.rax = regs.orig_rax;
		if (ptrace(PTRACE_SETREGS, pid, NULL, &regs) != 0)
			ptrace_failed("PTRACE_SETREGS", pid);
		replayed++;
		resume = PTRACE_SYSCALL;
		state = REPLAY_ENTRY;
	}
	double wall_s = (double)(now_ns() - start) / 1e9;

	untrack_child(pid);
	check_clean_exit(status, "guest");
	if (next != o.n)
		die("guest exited after %" PRIu64 " of %" PRIu64 " calls", next, o.n);

	struct stats st = compute_stats(samples, o.n);
	print_result("c_ptrace_sysemu", &o, &st, wall_s,
		     "\"mechanism\": \"PTRACE_SYSEMU\", "
		     "\"answer\": \"PTRACE_GETREGS + PTRACE_POKEUSER(rax)\", "
		     "\"stops\": %" PRIu64 ", \"replayed_syscalls\": %" PRIu64,
		     stops, replayed);
	return 0;
}

/*
 * Helpers shared by the reference programs: options, placement, timing,
 * statistics, JSON output and child-process hygiene.
 *
 * Every program is a single translation unit ("gcc NAME.c"), so everything
 * here is static; functions are static inline so that a program which does
 * not use one gets no unused-function warning.
 */
#ifndef REFS_COMMON_H
#define REFS_COMMON_H

#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/*
 * The syscall number the trapping mechanisms intercept. It is unassigned on
 * x86-64, so if interception ever failed the guest would get -ENOSYS, never a
 * value that could pass its check by chance.
 */
#define TRAP_NR 500

/* Exit codes of a child, so the parent can say what went wrong. */
#define EXIT_USAGE 2
#define EXIT_WRONG_ANSWER 3
#define EXIT_CHILD_SETUP 4
#define EXIT_SYSCALL_FAILED 5

/*
 * The answer to call number i. A large odd multiplier makes neighbouring
 * answers differ in many bits, so a stale, repeated or misrouted answer
 * cannot pass the check; the top bit is cleared so the value is never in the
 * range a C library would read as -errno.
 */
static inline uint64_t answer_for(uint64_t i)
{
	return (i * UINT64_C(2654435761) + 7) & (UINT64_MAX >> 1);
}

/*
 * One syscall with one argument, issued with the bare instruction. Every
 * reference uses the same sequence, so they differ only in what happens in
 * the kernel and the controller; the result is returned as the kernel (or
 * the controller) left it in RAX, without errno translation.
 */
static inline long raw_syscall1(long nr, long a0)
{
	long ret;

	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(nr), "D"(a0)
			 : "rcx", "r11", "memory");
	return ret;
}

static inline uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- children ---------------------------------------------------------- */

/*
 * Children the current process must kill and reap if it fails. A forked
 * child starts with an empty list: it must never touch its siblings.
 * (c_stub --stubs drives up to this many at once.)
 */
#define MAX_TRACKED_CHILDREN 4096
static pid_t tracked_children[MAX_TRACKED_CHILDREN];
static int n_tracked_children;

static inline void untrack_child(pid_t pid)
{
	for (int i = 0; i < n_tracked_children; i++) {
		if (tracked_children[i] == pid) {
			tracked_children[i] = tracked_children[--n_tracked_children];
			return;
		}
	}
}

/* Failure path: no child may outlive us, and none may stay a zombie. */
static inline void kill_and_reap_children(void)
{
	for (int i = 0; i < n_tracked_children; i++)
		kill(tracked_children[i], SIGKILL);
	for (int i = 0; i < n_tracked_children; i++)
		while (waitpid(tracked_children[i], NULL, __WALL) < 0 && errno == EINTR)
			;
	n_tracked_children = 0;
}

static inline void __attribute__((noreturn, format(printf, 1, 2)))
die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	kill_and_reap_children();
	exit(1);
}

#define die_errno(what) die("%s: %s", (what), strerror(errno))

/*
 * fork() for a child that must not survive its parent: PR_SET_PDEATHSIG is
 * set first, then the parent is checked, because the parent may have died
 * between fork and prctl, and then no signal would ever come.
 */
static inline pid_t fork_child(void)
{
	pid_t parent = getpid();
	pid_t pid = fork();

	if (pid < 0)
		die_errno("fork");
	if (pid == 0) {
		n_tracked_children = 0;
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
			_exit(EXIT_CHILD_SETUP);
		return 0;
	}
	if (n_tracked_children == MAX_TRACKED_CHILDREN) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, __WALL);
		die("more than %d children", MAX_TRACKED_CHILDREN);
	}
	tracked_children[n_tracked_children++] = pid;
	return pid;
}

static inline const char *child_exit_reason(int code)
{
	switch (code) {
	case EXIT_WRONG_ANSWER:
		return "it received a wrong answer";
	case EXIT_CHILD_SETUP:
		return "its setup failed";
	case EXIT_SYSCALL_FAILED:
		return "one of its syscalls failed";
	default:
		return "unexpected exit code";
	}
}

/* Fail loudly unless a reaped child's wait status is a clean exit. */
static inline void check_clean_exit(int status, const char *who)
{
	if (WIFSIGNALED(status))
		die("%s was killed by signal %d", who, WTERMSIG(status));
	if (!WIFEXITED(status))
		die("%s: unexpected wait status %#x", who, status);
	if (WEXITSTATUS(status) != 0)
		die("%s exited with %d (%s)", who, WEXITSTATUS(status),
		    child_exit_reason(WEXITSTATUS(status)));
}

/* Reap a child that should have finished cleanly. */
static inline void reap_clean_exit(pid_t pid, const char *who)
{
	int status;

	while (waitpid(pid, &status, __WALL) < 0) {
		if (errno != EINTR)
			die_errno("waitpid");
	}
	untrack_child(pid);
	check_clean_exit(status, who);
}

/* ---- options and placement --------------------------------------------- */

struct opts {
	uint64_t n;
	int same_core;
	/*
	 * --pin apart: only for a program that sets can_apart, because it must
	 * call apply_child_placement in each child it forks (a child that only
	 * inherited the mask would share CPU 0 with the controller).
	 */
	int can_apart, apart;
	cpu_set_t child_cpus;	/* apart: the inherited mask without CPU 0 */
};

static inline void __attribute__((noreturn)) usage(const char *extra)
{
	fprintf(stderr, "usage: [-n N] [--pin same|none]%s%s\n", extra[0] ? " " : "", extra);
	exit(EXIT_USAGE);
}

/*
 * Consume argv[*i] (and its value) if it is a common option; return 0 if it
 * is not, so the program can look at it.
 */
static inline int common_option(struct opts *o, int argc, char **argv, int *i,
				 const char *extra_usage)
{
	const char *arg = argv[*i];

	if (strcmp(arg, "-n") != 0 && strcmp(arg, "--pin") != 0)
		return 0;
	if (*i + 1 >= argc)
		usage(extra_usage);
	const char *val = argv[++*i];
	if (arg[1] == 'n') {
		char *end;
		errno = 0;
		unsigned long long n = strtoull(val, &end, 10);
		if (errno || *end || n == 0 || val[0] == '-')
			usage(extra_usage);
		o->n = n;
	} else if (strcmp(val, "same") == 0 || strcmp(val, "none") == 0 ||
		   (strcmp(val, "apart") == 0 && o->can_apart)) {
		o->same_core = val[0] == 's';
		o->apart = val[0] == 'a';
	} else {
		usage(extra_usage);
	}
	return 1;
}

/*
 * Same-core placement pins the calling process to CPU 0 before any child is
 * created; children and threads inherit the mask, so the controller and
 * everything it drives share one CPU. Unpinned leaves the inherited mask
 * alone and lets the scheduler place both sides. Apart pins the controller
 * to CPU 0 as well, but gives its children every other CPU it had, so the
 * controller's CPU is its own (aioumm bench's "apart" throughput figures).
 */
static inline void apply_placement(struct opts *o)
{
	cpu_set_t set;

	if (o->apart) {
		if (sched_getaffinity(0, sizeof(o->child_cpus), &o->child_cpus) != 0)
			die_errno("sched_getaffinity");
		CPU_CLR(0, &o->child_cpus);
		if (CPU_COUNT(&o->child_cpus) == 0)
			die("--pin apart needs a CPU besides CPU 0");
	} else if (!o->same_core) {
		return;
	}
	CPU_ZERO(&set);
	CPU_SET(0, &set);
	if (sched_setaffinity(0, sizeof(set), &set) != 0)
		die_errno("sched_setaffinity");
}

/* In a child just forked: move it off the controller's CPU under --pin apart. 0 or -1. */
static inline int apply_child_placement(const struct opts *o)
{
	if (!o->apart)
		return 0;
	return sched_setaffinity(0, sizeof(o->child_cpus), &o->child_cpus);
}

static inline const char *placement_name(const struct opts *o)
{
	return o->apart ? "apart" : o->same_core ? "same_core" : "unpinned";
}

/* ---- samples ----------------------------------------------------------- */

/*
 * Sample arrays live in MAP_SHARED memory so a guest child can fill them and
 * the parent can read them after reaping it.
 */
static inline uint64_t *shared_samples(uint64_t n)
{
	void *p = mmap(NULL, n * sizeof(uint64_t), PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		die_errno("mmap samples");
	return p;
}

struct stats {
	uint64_t median, p99, min, max;
	double mean;
};

static inline int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted samples: the smallest value with at
 * least pct% of the samples at or below it. */
static inline uint64_t percentile(const uint64_t *sorted, uint64_t n, unsigned pct)
{
	uint64_t rank = (n * pct + 99) / 100;

	return sorted[rank ? rank - 1 : 0];
}

/* Sorts the samples in place. */
static inline struct stats compute_stats(uint64_t *s, uint64_t n)
{
	struct stats st;
	double sum = 0;

	qsort(s, n, sizeof(*s), cmp_u64);
	for (uint64_t i = 0; i < n; i++)
		sum += (double)s[i];
	st.median = percentile(s, n, 50);
	st.p99 = percentile(s, n, 99);
	st.min = s[0];
	st.max = s[n - 1];
	st.mean = sum / (double)n;
	return st;
}

/*
 * The one JSON object a reference prints. extra_fmt adds members to "extra"
 * (a comma-separated list of "key": value, or "" for none); the common ones
 * (min, max, wall time, kernel) are always there.
 */
static inline void __attribute__((format(printf, 5, 6)))
print_result(const char *name, const struct opts *o, const struct stats *st,
	     double wall_s, const char *extra_fmt, ...)
{
	struct utsname u;
	va_list ap;

	if (uname(&u) != 0)
		strcpy(u.release, "unknown");
	printf("{\"name\": \"%s\", \"placement\": \"%s\", \"n\": %" PRIu64
	       ", \"median_ns\": %" PRIu64 ", \"p99_ns\": %" PRIu64 ", \"mean_ns\": %.0f"
	       ", \"extra\": {\"min_ns\": %" PRIu64 ", \"max_ns\": %" PRIu64
	       ", \"wall_s\": %.3f, \"kernel\": \"%s\"",
	       name, placement_name(o), o->n, st->median, st->p99, st->mean,
	       st->min, st->max, wall_s, u.release);
	if (extra_fmt[0]) {
		fputs(", ", stdout);
		va_start(ap, extra_fmt);
		vprintf(extra_fmt, ap);
		va_end(ap);
	}
	fputs("}}\n", stdout);
	fflush(stdout);
}

/* ---- the guest --------------------------------------------------------- */

/*
 * The guest side of every trapping reference: n trapped calls, each carrying
 * its index in the first argument, each answer checked, each round trip
 * timed from just before the syscall instruction to just after it returns.
 */
static inline void guest_loop(uint64_t n, uint64_t *samples)
{
	for (uint64_t i = 0; i < n; i++) {
		uint64_t t0 = now_ns();
		long r = raw_syscall1(TRAP_NR, (long)i);
		uint64_t t1 = now_ns();

		if ((uint64_t)r != answer_for(i)) {
			fprintf(stderr, "guest: call %" PRIu64 " was answered %ld, expected %" PRIu64 "\n",
				i, r, answer_for(i));
			_exit(EXIT_WRONG_ANSWER);
		}
		samples[i] = t1 - t0;
	}
}

#endif

/*
 * bridge_choice: how should a stub's hand-over wake the controller's event
 * loop?
 *
 * K children each share a slot with the parent. A round trip is the stub
 * handoff of the design: the child writes its round number into the slot,
 * stores word = CONTROLLER (release), notifies, and FUTEX_WAITs until
 * word == CHILD; the parent, woken through its event loop, loads the word
 * (acquire), writes the answer into the slot, stores word = CHILD (release)
 * and FUTEX_WAKEs the child. Two ways to wake the loop are compared:
 *
 *  (a) every child has its own eventfd and writes it after the store; the
 *      parent's single loop thread epoll_waits on all K eventfds.
 *  (b) the children only FUTEX_WAKE their word; one helper thread in the
 *      parent waits on the K words at once with futex_waitv (at most 127
 *      words: the 128th entry is the helper's re-arm word, see below) and
 *      writes one eventfd the loop thread epoll_waits on; the loop thread
 *      then scans the words for CONTROLLER.
 *
 * Each design runs with every K; each row reports round trips per second,
 * per-round-trip latency (timed in the child, from before its store to after
 * it sees CHILD), syscalls per round trip on each side, and context switches
 * per round trip from getrusage: a voluntary one is a thread going to sleep,
 * so it counts the wake-ups each design needs; an involuntary one is a
 * thread preempted, mostly by the thread it has just woken on its CPU.
 *
 * Every answer is checked on both sides: the parent checks the round number
 * (each round is answered exactly once and in order), the child checks the
 * answer, which depends on both the child and the round, so an answer for
 * another child or another round cannot pass.
 */
#include "common.h"

#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/syscall.h>

#define EXTRA_USAGE "[--k K[,K...]] [--design a|b|both]"

enum { CHILD = 0, CONTROLLER = 1 };

#define MAX_K (FUTEX_WAITV_MAX - 1)
#define MAX_ROWS 16
/* The loop gives up (and says so) if nothing at all happens for this long. */
#define STALL_MS 10000

/*
 * One child's slot. 128-byte alignment keeps slots off each other's cache
 * line and off the adjacent line the prefetcher pairs with it, so children
 * do not slow each other down through false sharing.
 */
struct slot {
	uint32_t word;   /* who owns the slot: CHILD or CONTROLLER */
	uint64_t round;  /* child -> parent: the round being handed over */
	uint64_t answer; /* parent -> child */
	/* Written once by the child before it exits. */
	uint64_t syscalls, nvcsw, nivcsw;
} __attribute__((aligned(128)));

struct shared {
	uint32_t go; /* start barrier: children wait until it is 1 */
	struct slot slots[];
};

struct row {
	char design;
	int k;
	double wall_s;
	struct stats st;
	uint64_t ctl_syscalls, helper_syscalls, child_syscalls;
	uint64_t ctl_nvcsw, ctl_nivcsw, helper_nvcsw, helper_nivcsw;
	uint64_t child_nvcsw, child_nivcsw;
	uint64_t helper_signals, scans;
};

static inline uint32_t load_acquire(const uint32_t *p)
{
	return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static inline void store_release(uint32_t *p, uint32_t v)
{
	__atomic_store_n(p, v, __ATOMIC_RELEASE);
}

/* Shared (not private) futexes: the words live in memory shared between processes. */
static inline long futex_wait(uint32_t *word, uint32_t expected)
{
	return syscall(SYS_futex, word, FUTEX_WAIT, expected, NULL, NULL, 0);
}

static inline long futex_wake(uint32_t *word, int how_many)
{
	return syscall(SYS_futex, word, FUTEX_WAKE, how_many, NULL, NULL, 0);
}

static inline uint64_t slot_answer(int k, uint64_t round)
{
	return answer_for(((uint64_t)k << 40) | round);
}

/* ---- child ------------------------------------------------------------- */

static void __attribute__((noreturn))
run_child(struct shared *sh, int k, char design, int efd, uint64_t n, uint64_t *samples)
{
	struct slot *s = &sh->slots[k];
	uint64_t syscalls = 0;
	const uint64_t one = 1;

	while (load_acquire(&sh->go) == 0)
		futex_wait(&sh->go, 0);

	for (uint64_t i = 0; i < n; i++) {
		uint64_t t0 = now_ns();

		s->round = i;
		/* Release: the parent that sees CONTROLLER also sees the round. */
		store_release(&s->word, CONTROLLER);
		if (design == 'a') {
			if (write(efd, &one, sizeof(one)) != sizeof(one))
				_exit(EXIT_SYSCALL_FAILED);
		} else {
			futex_wake(&s->word, 1);
		}
		syscalls++;
		/*
		 * No lost wake-up: FUTEX_WAIT compares the word with CONTROLLER
		 * inside the kernel, under the same lock FUTEX_WAKE takes, and the
		 * parent stores CHILD before it wakes. So either the wait sees
		 * CHILD and returns at once (EAGAIN), or it is queued before the
		 * wake and is woken by it. The loop re-checks after every return
		 * (wake, EAGAIN, EINTR, or a wake meant for the helper thread).
		 */
		while (load_acquire(&s->word) != CHILD) {
			syscalls++;
			if (futex_wait(&s->word, CONTROLLER) != 0 && errno != EAGAIN && errno != EINTR)
				_exit(EXIT_SYSCALL_FAILED);
		}
		uint64_t t1 = now_ns();

		if (s->answer != slot_answer(k, i)) {
			fprintf(stderr, "child %d: round %" PRIu64 " answered %" PRIu64 ", expected %" PRIu64 "\n",
				k, i, s->answer, slot_answer(k, i));
			_exit(EXIT_WRONG_ANSWER);
		}
		samples[i] = t1 - t0;
	}

	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	s->syscalls = syscalls;
	s->nvcsw = (uint64_t)ru.ru_nvcsw;
	s->nivcsw = (uint64_t)ru.ru_nivcsw;
	_exit(0);
}

/* ---- parent ------------------------------------------------------------ */

struct ctl {
	struct shared *sh;
	int k;
	char design;
	uint64_t *next_round; /* per child: the round it must hand over next */
	uint64_t answered;
	uint64_t syscalls;
	/* design (b): the helper thread and the eventfd it signals */
	int helper_efd;
	uint32_t rearm; /* bumped by the loop after it has answered words */
	uint32_t helper_stop;
	uint64_t helper_syscalls, helper_signals, helper_nvcsw, helper_nivcsw;
};

/*
 * Answer child k, whose word the caller has seen as CONTROLLER. In design
 * (b) the helper thread may be queued on this word too (it may have read
 * CHILD just after the store below and started waiting before the wake), so
 * the wake must reach every waiter: a single one could go to the helper and
 * leave the child asleep.
 */
static void serve(struct ctl *c, int k)
{
	struct slot *s = &c->sh->slots[k];

	if (s->round != c->next_round[k])
		die("child %d handed over round %" PRIu64 ", expected %" PRIu64, k, s->round,
		    c->next_round[k]);
	s->answer = slot_answer(k, s->round);
	/* Release: the child that sees CHILD also sees the answer. */
	store_release(&s->word, CHILD);
	if (futex_wake(&s->word, c->design == 'a' ? 1 : INT_MAX) < 0)
		die_errno("FUTEX_WAKE");
	c->syscalls++;
	c->next_round[k]++;
	c->answered++;
}

/*
 * Design (b)'s helper: sleep on every word a child holds, and signal the
 * loop's eventfd whenever some word is CONTROLLER.
 *
 * Words the loop holds (CONTROLLER) are left out of the wait. Waiting on
 * them with CONTROLLER as the expected value would lose hand-overs: the
 * loop can answer one and the child hand over the next round between the
 * helper's read and its wait, and the wait would then find the value it
 * expects and sleep through a hand-over nobody signalled. Instead the loop
 * bumps the re-arm counter (and wakes it) after every scan that answered
 * something, and the helper always waits on that counter too.
 *
 * No lost wake-up: the counter is read before the words. futex_waitv
 * compares every expected value in the kernel before sleeping, so a child
 * word that became CONTROLLER after it was read, or an answer (counter
 * bump) after the counter was read, makes the wait return at once (EAGAIN);
 * a change after the wait began comes with the FUTEX_WAKE that ends it (the
 * child's after it stores CONTROLLER, the loop's after it bumps the
 * counter). After every return everything is read again, so each hand-over
 * is seen and signalled at least once. A signal can be redundant (a word
 * still waiting for the loop is signalled again); the eventfd counter
 * absorbs that and the scan finds nothing new.
 */
static void *helper_main(void *arg)
{
	struct ctl *c = arg;
	struct futex_waitv waiters[FUTEX_WAITV_MAX];
	const uint64_t one = 1;

	memset(waiters, 0, sizeof(waiters));
	while (load_acquire(&c->helper_stop) == 0) {
		uint32_t seq = load_acquire(&c->rearm);
		int nw = 0, pending = 0;

		for (int k = 0; k < c->k; k++) {
			uint32_t *word = &c->sh->slots[k].word;

			if (load_acquire(word) == CONTROLLER) {
				pending = 1;
				continue;
			}
			waiters[nw].uaddr = (uintptr_t)word;
			waiters[nw].val = CHILD;
			waiters[nw].flags = FUTEX_32;
			nw++;
		}
		waiters[nw].uaddr = (uintptr_t)&c->rearm;
		waiters[nw].val = seq;
		waiters[nw].flags = FUTEX_32 | FUTEX_PRIVATE_FLAG;
		nw++;

		if (pending) {
			if (write(c->helper_efd, &one, sizeof(one)) != sizeof(one))
				die_errno("helper: eventfd write");
			c->helper_syscalls++;
			c->helper_signals++;
		}
		c->helper_syscalls++;
		if (syscall(SYS_futex_waitv, waiters, nw, 0, NULL, CLOCK_MONOTONIC) < 0 &&
		    errno != EAGAIN && errno != EINTR)
			die_errno("futex_waitv");
	}

	struct rusage ru;
	getrusage(RUSAGE_THREAD, &ru);
	c->helper_nvcsw = (uint64_t)ru.ru_nvcsw;
	c->helper_nivcsw = (uint64_t)ru.ru_nivcsw;
	return NULL;
}

/* Tell the helper that words it left out may be the children's again. */
static void rearm_helper(struct ctl *c)
{
	__atomic_add_fetch(&c->rearm, 1, __ATOMIC_RELEASE);
	if (syscall(SYS_futex, &c->rearm, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0) < 0)
		die_errno("FUTEX_WAKE rearm");
	c->syscalls++;
}

/* epoll tags: what a ready descriptor is */
#define TAG_BELL 0ull  /* an eventfd: child k's (a) or the helper's (b) */
#define TAG_EXIT 1ull  /* child k's pidfd: it has exited */
#define TAG(kind, k) (((kind) << 32) | (uint64_t)(k))

static void epoll_add(int ep, int fd, uint64_t tag)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = tag};

	if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0)
		die_errno("epoll_ctl");
}

static struct row run_row(char design, int k, uint64_t n)
{
	struct row r;
	memset(&r, 0, sizeof(r));
	r.design = design;
	r.k = k;

	size_t shared_size = sizeof(struct shared) + (size_t)k * sizeof(struct slot);
	struct shared *sh = mmap(NULL, shared_size, PROT_READ | PROT_WRITE,
				 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		die_errno("mmap slots");
	uint64_t *samples = shared_samples((uint64_t)k * n);

	struct ctl c;
	memset(&c, 0, sizeof(c));
	c.sh = sh;
	c.k = k;
	c.design = design;
	c.next_round = calloc((size_t)k, sizeof(uint64_t));
	pid_t *pids = calloc((size_t)k, sizeof(pid_t));
	int *efds = calloc((size_t)k, sizeof(int));
	int *pidfds = calloc((size_t)k, sizeof(int));
	if (!c.next_round || !pids || !efds || !pidfds)
		die("out of memory");

	int ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0)
		die_errno("epoll_create1");
	if (design == 'a') {
		for (int i = 0; i < k; i++) {
			efds[i] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
			if (efds[i] < 0)
				die_errno("eventfd");
			epoll_add(ep, efds[i], TAG(TAG_BELL, i));
		}
	} else {
		c.helper_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (c.helper_efd < 0)
			die_errno("eventfd");
		epoll_add(ep, c.helper_efd, TAG(TAG_BELL, 0));
	}

	for (int i = 0; i < k; i++) {
		pids[i] = fork_child();
		if (pids[i] == 0)
			run_child(sh, i, design, design == 'a' ? efds[i] : -1, n, samples + (uint64_t)i * n);
		/* A pidfd in the same epoll set: a child that dies is noticed at once. */
		pidfds[i] = (int)syscall(SYS_pidfd_open, pids[i], 0);
		if (pidfds[i] < 0)
			die_errno("pidfd_open");
		epoll_add(ep, pidfds[i], TAG(TAG_EXIT, i));
	}

	pthread_t helper;
	if (design == 'b') {
		int err = pthread_create(&helper, NULL, helper_main, &c);
		if (err != 0)
			die("pthread_create: %s", strerror(err));
	}

	struct rusage ru0, ru1;
	getrusage(RUSAGE_THREAD, &ru0);
	uint64_t start = now_ns();
	store_release(&sh->go, 1);
	futex_wake(&sh->go, INT_MAX);

	struct epoll_event evs[MAX_K + 1];
	int live = k;
	uint64_t scans = 0;
	while (live > 0) {
		int nev = epoll_wait(ep, evs, MAX_K + 1, STALL_MS);
		c.syscalls++;
		if (nev < 0) {
			if (errno == EINTR)
				continue;
			die_errno("epoll_wait");
		}
		if (nev == 0)
			die("design (%c), K=%d: no progress for %d ms (%" PRIu64 " of %" PRIu64
			    " round trips answered)",
			    design, k, STALL_MS, c.answered, (uint64_t)k * n);
		for (int e = 0; e < nev; e++) {
			int i = (int)(evs[e].data.u64 & 0xffffffffu);
			uint64_t count;

			if (evs[e].data.u64 >> 32 == TAG_EXIT) {
				reap_clean_exit(pids[i], "child");
				if (c.next_round[i] != n)
					die("child %d exited after %" PRIu64 " of %" PRIu64 " rounds", i,
					    c.next_round[i], n);
				epoll_ctl(ep, EPOLL_CTL_DEL, pidfds[i], NULL);
				close(pidfds[i]);
				live--;
				continue;
			}
			/*
			 * Read (reset) the eventfd before looking at the words: a
			 * hand-over signalled after the read leaves it readable
			 * again, so the next epoll_wait returns and nothing is lost.
			 */
			int bell = design == 'a' ? efds[i] : c.helper_efd;
			c.syscalls++;
			if (read(bell, &count, sizeof(count)) != sizeof(count))
				die_errno("eventfd read");
			if (design == 'a') {
				/* The child wrote its eventfd after storing CONTROLLER. */
				if (load_acquire(&sh->slots[i].word) != CONTROLLER)
					die("child %d signalled but its word is not CONTROLLER", i);
				serve(&c, i);
			} else {
				uint64_t before = c.answered;

				scans++;
				for (int j = 0; j < k; j++) {
					if (load_acquire(&sh->slots[j].word) == CONTROLLER)
						serve(&c, j);
				}
				if (c.answered != before)
					rearm_helper(&c);
			}
		}
	}
	uint64_t end = now_ns();
	getrusage(RUSAGE_THREAD, &ru1);

	if (design == 'b') {
		store_release(&c.helper_stop, 1);
		rearm_helper(&c);
		pthread_join(helper, NULL);
		close(c.helper_efd);
	} else {
		for (int i = 0; i < k; i++)
			close(efds[i]);
	}
	close(ep);
	if (c.answered != (uint64_t)k * n)
		die("answered %" PRIu64 " of %" PRIu64 " round trips", c.answered, (uint64_t)k * n);

	for (int i = 0; i < k; i++) {
		r.child_syscalls += sh->slots[i].syscalls;
		r.child_nvcsw += sh->slots[i].nvcsw;
		r.child_nivcsw += sh->slots[i].nivcsw;
	}
	r.wall_s = (double)(end - start) / 1e9;
	r.ctl_syscalls = c.syscalls;
	r.ctl_nvcsw = (uint64_t)(ru1.ru_nvcsw - ru0.ru_nvcsw);
	r.ctl_nivcsw = (uint64_t)(ru1.ru_nivcsw - ru0.ru_nivcsw);
	r.helper_syscalls = c.helper_syscalls;
	r.helper_signals = c.helper_signals;
	r.helper_nvcsw = c.helper_nvcsw;
	r.helper_nivcsw = c.helper_nivcsw;
	r.scans = scans;
	r.st = compute_stats(samples, (uint64_t)k * n);

	munmap(samples, (uint64_t)k * n * sizeof(uint64_t));
	munmap(sh, shared_size);
	free(c.next_round);
	free(pids);
	free(efds);
	free(pidfds);
	return r;
}

static void print_row(const struct row *r, uint64_t n)
{
	double rts = (double)r->k * (double)n;
	const char *bridge = r->design == 'a'
				     ? "eventfd per child, epoll in the loop thread"
				     : "futex_waitv helper thread, one eventfd to the loop thread";

	printf("{\"design\": \"%c\", \"bridge\": \"%s\", \"k\": %d, \"round_trips\": %.0f, "
	       "\"wall_s\": %.3f, \"rt_per_s\": %.0f, "
	       "\"median_ns\": %" PRIu64 ", \"p99_ns\": %" PRIu64 ", \"mean_ns\": %.0f, \"max_ns\": %" PRIu64 ", "
	       "\"syscalls_per_rt\": {\"loop\": %.3f, \"helper\": %.3f, \"child\": %.3f}, "
	       "\"sleeps_per_rt\": {\"loop\": %.3f, \"helper\": %.3f, \"child\": %.3f, \"total\": %.3f}, "
	       "\"preemptions_per_rt\": %.3f, \"context_switches_per_rt\": %.3f",
	       r->design, bridge, r->k, rts, r->wall_s, rts / r->wall_s, r->st.median, r->st.p99,
	       r->st.mean, r->st.max, (double)r->ctl_syscalls / rts,
	       (double)r->helper_syscalls / rts, (double)r->child_syscalls / rts,
	       (double)r->ctl_nvcsw / rts, (double)r->helper_nvcsw / rts,
	       (double)r->child_nvcsw / rts,
	       (double)(r->ctl_nvcsw + r->helper_nvcsw + r->child_nvcsw) / rts,
	       (double)(r->ctl_nivcsw + r->helper_nivcsw + r->child_nivcsw) / rts,
	       (double)(r->ctl_nvcsw + r->helper_nvcsw + r->child_nvcsw + r->ctl_nivcsw +
			r->helper_nivcsw + r->child_nivcsw) / rts);
	if (r->design == 'b')
		printf(", \"helper_signals_per_rt\": %.3f, \"scans_per_rt\": %.3f",
		       (double)r->helper_signals / rts, (double)r->scans / rts);
	fputs("}", stdout);
}

static int parse_k_list(const char *s, int *ks)
{
	int count = 0;
	char *end;

	for (;;) {
		errno = 0;
		long v = strtol(s, &end, 10);
		if (errno || end == s || v < 1 || v > MAX_K || count == MAX_ROWS)
			usage(EXTRA_USAGE);
		ks[count++] = (int)v;
		if (*end == '\0')
			return count;
		if (*end != ',')
			usage(EXTRA_USAGE);
		s = end + 1;
	}
}

int main(int argc, char **argv)
{
	struct opts o = {.n = 100000, .same_core = 0};
	int ks[MAX_ROWS] = {1, 16, 64};
	int nk = 3;
	const char *designs = "ab";

	for (int i = 1; i < argc; i++) {
		if (common_option(&o, argc, argv, &i, EXTRA_USAGE))
			continue;
		if (strcmp(argv[i], "--k") == 0 && i + 1 < argc) {
			nk = parse_k_list(argv[++i], ks);
		} else if (strcmp(argv[i], "--design") == 0 && i + 1 < argc) {
			const char *v = argv[++i];
			if (strcmp(v, "a") == 0)
				designs = "a";
			else if (strcmp(v, "b") == 0)
				designs = "b";
			else if (strcmp(v, "both") == 0)
				designs = "ab";
			else
				usage(EXTRA_USAGE);
		} else {
			usage(EXTRA_USAGE);
		}
	}
	apply_placement(&o);

	struct row rows[2 * MAX_ROWS];
	int nrows = 0;
	for (const char *d = designs; *d; d++)
		for (int i = 0; i < nk; i++)
			rows[nrows++] = run_row(*d, ks[i], o.n);

	struct utsname u;
	if (uname(&u) != 0)
		strcpy(u.release, "unknown");
	printf("{\"name\": \"bridge_choice\", \"placement\": \"%s\", \"n\": %" PRIu64
	       ", \"n_meaning\": \"round trips per child\", \"kernel\": \"%s\", \"rows\": [",
	       placement_name(&o), o.n, u.release);
	for (int i = 0; i < nrows; i++) {
		if (i)
			fputs(", ", stdout);
		print_row(&rows[i], o.n);
	}
	fputs("]}\n", stdout);
	fflush(stdout);
	return 0;
}

/*
 * native: the cost of a plain, untrapped syscall.
 *
 * The floor under every other reference: getppid N times, timed the same way
 * the guests time their trapped calls. getppid does almost no work in the
 * kernel, so this is mostly the entry/exit cost (including the speculative-
 * execution mitigations the kernel applies on this CPU). The clock pair's own
 * cost is measured too, because it is included in every sample of every
 * reference.
 */
#include "common.h"

#include <sys/syscall.h>

int main(int argc, char **argv)
{
	struct opts o = {.n = 100000, .same_core = 0};

	for (int i = 1; i < argc; i++) {
		if (!common_option(&o, argc, argv, &i, ""))
			usage("");
	}
	apply_placement(&o);

	uint64_t *samples = shared_samples(o.n);
	long expected = (long)getppid();

	/* Back-to-back clock reads: what a sample costs when the syscall costs nothing. */
	for (uint64_t i = 0; i < o.n; i++) {
		uint64_t t0 = now_ns();
		samples[i] = now_ns() - t0;
	}
	struct stats clock = compute_stats(samples, o.n);

	uint64_t start = now_ns();
	for (uint64_t i = 0; i < o.n; i++) {
		uint64_t t0 = now_ns();
		long r = raw_syscall1(SYS_getppid, 0);
		uint64_t t1 = now_ns();

		if (r != expected)
			die("getppid returned %ld, expected %ld", r, expected);
		samples[i] = t1 - t0;
	}
	double wall_s = (double)(now_ns() - start) / 1e9;

	struct stats st = compute_stats(samples, o.n);
	print_result("c_native", &o, &st, wall_s,
		     "\"syscall\": \"getppid\", \"clock_pair_median_ns\": %" PRIu64,
		     clock.median);
	return 0;
}

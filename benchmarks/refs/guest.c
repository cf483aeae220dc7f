/*
 * guest: the guest loop as a program of its own, for controllers that must
 * exec their guest (python_ptrace_ref.py starts it with python-ptrace).
 *
 *   guest -n N --samples-fd FD --parent PID
 *
 * Makes N calls of TRAP_NR, each carrying its index in RDI, checks every
 * answer and writes each round trip's nanoseconds as a native-endian u64
 * into FD (a file the controller sized to N * 8 bytes and reads afterwards).
 * Exits 0 on success, EXIT_WRONG_ANSWER on a wrong answer.
 */
#include "common.h"

#include <sys/stat.h>

#define EXTRA_USAGE "--samples-fd FD --parent PID"

static long parse_long(const char *s)
{
	char *end;

	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || *end || v < 0)
		usage(EXTRA_USAGE);
	return v;
}

int main(int argc, char **argv)
{
	struct opts o = {.n = 100000, .same_core = 0};
	long fd = -1, parent = -1;

	for (int i = 1; i < argc; i++) {
		if (common_option(&o, argc, argv, &i, EXTRA_USAGE))
			continue;
		if (strcmp(argv[i], "--samples-fd") == 0 && i + 1 < argc)
			fd = parse_long(argv[++i]);
		else if (strcmp(argv[i], "--parent") == 0 && i + 1 < argc)
			parent = parse_long(argv[++i]);
		else
			usage(EXTRA_USAGE);
	}
	if (fd < 0 || parent <= 0)
		usage(EXTRA_USAGE);
	apply_placement(&o);

	/*
	 * The controller cannot set this between its fork and exec, so the
	 * guest does it, and checks the controller is still its parent.
	 */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != (pid_t)parent)
		return EXIT_CHILD_SETUP;

	struct stat sb;
	if (fstat((int)fd, &sb) != 0 || (uint64_t)sb.st_size < o.n * sizeof(uint64_t)) {
		fprintf(stderr, "guest: samples file missing or smaller than %" PRIu64 " bytes\n",
			o.n * sizeof(uint64_t));
		return EXIT_CHILD_SETUP;
	}
	uint64_t *samples = mmap(NULL, o.n * sizeof(uint64_t), PROT_READ | PROT_WRITE,
				 MAP_SHARED, (int)fd, 0);
	if (samples == MAP_FAILED) {
		perror("guest: mmap samples");
		return EXIT_CHILD_SETUP;
	}
	guest_loop(o.n, samples);
	return 0;
}

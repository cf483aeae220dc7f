/* exit_status: writes one line to each of stdout and stderr, then exits with
 * status argv[1] (default 3), so the runner's exit status and its two output
 * streams can each be told apart. */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
	int status = argc > 1 ? atoi(argv[1]) : 3;

	printf("exiting with status %d\n", status);
	fprintf(stderr, "this line goes to stderr\n");
	return status;
}

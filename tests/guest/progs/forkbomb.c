/* Forks until fork fails; every child waits for its parent's signal. Prints how it ended. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int main(void)
{
	int made = 0, err = 0;

	for (;;) {
		pid_t pid = fork();
		if (pid == 0) {
			pause();
			_exit(0);
		}
		if (pid < 0) {
			err = errno;
			break;
		}
		made++;
		if (made > 100000)
			break;
	}
	printf("fork failed with %s after %d children\n", err == EAGAIN ? "EAGAIN" : strerror(err), made);
	signal(SIGUSR1, SIG_IGN); /* the children keep the default action: it ends them */
	kill(0, SIGUSR1);
	while (wait(NULL) > 0)
		;
	printf("all reaped\n");
	return 0;
}

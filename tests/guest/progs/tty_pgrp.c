/* The terminal's process group and session, as an interactive shell uses them.
 * Run with its controlling terminal on stdin; nothing printed depends on pids. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

static const char *err(int res)
{
	return res < 0 ? strerrorname_np(errno) : "ok";
}

int main(void)
{
	pid_t sid = -1, child;
	int status, pipefd[2];
	char go;

	/* What a shell checks before it takes the terminal: is its group the foreground one? */
	printf("foreground is mine: %d\n", tcgetpgrp(0) == getpgrp());
	printf("TIOCGSID: %s, ", err(ioctl(0, TIOCGSID, &sid)));
	printf("is my session: %d\n", sid == getsid(0));
	printf("TIOCGPGRP of a pipe: %s\n", err(ioctl(pipe(pipefd) ? -1 : pipefd[0], TIOCGPGRP, &sid)));

	/* A job in a group of its own gets the terminal, then the shell takes it back. */
	signal(SIGTTOU, SIG_IGN);	/* as shells do: a background tcsetpgrp would stop it */
	child = fork();
	if (child == 0) {
		setpgid(0, 0);
		if (read(pipefd[0], &go, 1) != 1)
			return 1;
		printf("job: foreground is mine: %d\n", tcgetpgrp(0) == getpgrp());
		fflush(stdout);
		if (fork() == 0) {	/* not a group leader: it may start a session */
			printf("job: new session: %s, ", err(setsid()));
			printf("TIOCGPGRP there: %s\n", err(ioctl(0, TIOCGPGRP, &sid)));
			fflush(stdout);
			return 0;
		}
		wait(&status);
		return 0;
	}
	setpgid(child, child);
	printf("tcsetpgrp(job): %s\n", err(tcsetpgrp(0, child)));
	printf("foreground is the job's: %d\n", tcgetpgrp(0) == child);
	fflush(stdout);
	if (write(pipefd[1], "g", 1) != 1 || waitpid(child, &status, 0) != child)
		return 1;
	printf("tcsetpgrp(no such group): %s\n", err(tcsetpgrp(0, 0x7ffffff0)));
	printf("tcsetpgrp(-1): %s\n", err(tcsetpgrp(0, -1)));
	printf("tcsetpgrp(mine): %s\n", err(tcsetpgrp(0, getpgrp())));
	printf("foreground is mine again: %d\n", tcgetpgrp(0) == getpgrp());

	/* As an interactive shell does: lead a group of its own, then at its end give the
	 * terminal back to the group it came from (the one of whatever started it), and go back. */
	pid_t outer = getpgrp();
	printf("own group: %s, ", err(setpgid(0, 0)));
	printf("tcsetpgrp(it): %s\n", err(tcsetpgrp(0, getpgrp())));
	printf("tcsetpgrp(the outer group): %s, ", err(tcsetpgrp(0, outer)));
	printf("setpgid(the outer group): %s\n", err(setpgid(0, outer)));
	printf("foreground is mine at the end: %d\n", tcgetpgrp(0) == getpgrp());
	return 0;
}

/* Job control of a threaded process: a stop signal stops every thread, SIGCONT resumes them all. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile long *counter;

static void *spin(void *arg)
{
	(void)arg;
	for (;;)
		__atomic_add_fetch(counter, 1, __ATOMIC_RELAXED);
	return NULL;
}

static void nap(long ms)
{
	struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&t, NULL);
}

int main(void)
{
	counter = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	pid_t child = fork();
	if (child == 0) {
		pthread_t t;
		pthread_create(&t, NULL, spin, NULL);
		for (;;)
			pause(); /* the main thread waits in a syscall, the other one computes */
	}
	while (*counter < 1000)
		nap(1);
	int status;
	kill(child, SIGSTOP);
	waitpid(child, &status, WUNTRACED);
	printf("stopped: %d by %s\n", WIFSTOPPED(status), WSTOPSIG(status) == SIGSTOP ? "SIGSTOP" : "?");
	nap(20);
	long a = *counter;
	nap(100);
	printf("every thread stopped: %s\n", *counter == a ? "yes" : "no");
	kill(child, SIGCONT);
	waitpid(child, &status, WCONTINUED);
	printf("continued: %d\n", WIFCONTINUED(status));
	long b = *counter;
	for (int i = 0; i < 200 && *counter == b; i++)
		nap(5);
	printf("running again: %s\n", *counter != b ? "yes" : "no");
	kill(child, SIGSTOP);
	waitpid(child, &status, WUNTRACED);
	kill(child, SIGKILL); /* a stopped threaded process still dies of SIGKILL */
	waitpid(child, &status, 0);
	printf("killed: %d by %s\n", WIFSIGNALED(status), WTERMSIG(status) == SIGKILL ? "SIGKILL" : "?");
	return 0;
}

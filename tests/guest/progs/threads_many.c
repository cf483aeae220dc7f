/* More threads alive at once than the run allows processes: each returns a value joined by main. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

static pthread_barrier_t all_started;

static void *work(void *arg)
{
	long i = (long)arg;
	pthread_barrier_wait(&all_started); /* every thread is alive at the same time */
	return (void *)(i * i);
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 300;
	pthread_t *t = calloc(n, sizeof(*t));
	pthread_attr_t attr;
	long sum = 0;

	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 64 * 1024);
	pthread_barrier_init(&all_started, NULL, n + 1);
	for (long i = 0; i < n; i++)
		if (pthread_create(&t[i], &attr, work, (void *)i) != 0) {
			printf("pthread_create %ld failed\n", i);
			return 1;
		}
	pthread_barrier_wait(&all_started);
	for (int i = 0; i < n; i++) {
		void *r;
		pthread_join(t[i], &r);
		sum += (long)r;
	}
	printf("%d threads, sum of squares %ld\n", n, sum);
	return 0;
}

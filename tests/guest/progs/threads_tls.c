/* Thread-local storage: __thread variables and errno are each thread's own. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

static __thread int counter = 100;
static __thread char name[16] = "main";
static pthread_barrier_t barrier;
static int seen_counter[4], seen_errno[4];
static char seen_name[4][16];

static void *work(void *arg) {
    long me = (long)arg;
    snprintf(name, sizeof name, "worker%ld", me);
    counter += (int)me;
    errno = 0;
    if (me % 2) close(-1); /* EBADF in odd threads only */
    pthread_barrier_wait(&barrier); /* every thread has set its own values */
    seen_counter[me] = counter;
    seen_errno[me] = errno;
    snprintf(seen_name[me], sizeof seen_name[me], "%s", name);
    return NULL;
}

int main(void) {
    pthread_t t[4];
    pthread_barrier_init(&barrier, NULL, 4);
    errno = 0;
    for (long i = 0; i < 4; i++) pthread_create(&t[i], NULL, work, (void *)i);
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < 4; i++)
        printf("thread %d: counter %d errno %d name %s\n", i, seen_counter[i], seen_errno[i], seen_name[i]);
    printf("main: counter %d errno %d name %s\n", counter, errno, name);
    return 0;
}

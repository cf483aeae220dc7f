/* Threads that each compute a value and return it; main joins them in order. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

#define N 12

static pid_t pids[N];
static int tid_differs[N];

static void *work(void *arg) {
    intptr_t n = (intptr_t)arg;
    uint64_t h = 1469598103934665603ULL;
    for (intptr_t i = 0; i < 20000 * (n + 1); i++) h = (h ^ (uint64_t)i) * 1099511628211ULL;
    pids[n] = getpid();
    tid_differs[n] = syscall(SYS_gettid) != getpid();
    return (void *)(uintptr_t)(h & 0xFFFFFFFF);
}

int main(void) {
    pthread_t t[N];
    for (intptr_t i = 0; i < N; i++)
        if (pthread_create(&t[i], NULL, work, (void *)i) != 0) {
            printf("pthread_create failed\n");
            return 1;
        }
    for (int i = 0; i < N; i++) {
        void *r;
        int err = pthread_join(t[i], &r);
        printf("thread %d: join %d value %lu same pid %d own tid %d\n", i, err, (unsigned long)(uintptr_t)r,
               pids[i] == getpid(), tid_differs[i]);
    }
    printf("main tid is pid: %d\n", syscall(SYS_gettid) == getpid());
    return 0;
}

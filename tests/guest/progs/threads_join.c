/* Threads that each compute a value and return it; main joins them in order. */
#include <dirent.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <stdlib.h>
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

static pthread_barrier_t all_here;

static void *wait_at_barrier(void *arg) {
    (void)arg;
    pthread_barrier_wait(&all_here);
    return NULL;
}

/* /proc/self/task and the Threads: line of /proc/self/status while 4 threads live. */
static void count_tasks(void) {
    pthread_t t[3];
    pthread_barrier_init(&all_here, NULL, 4);
    for (int i = 0; i < 3; i++) pthread_create(&t[i], NULL, wait_at_barrier, NULL);
    int tasks = 0, self_listed = 0;
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        tasks++;
        if (atoi(e->d_name) == getpid()) self_listed = 1;
    }
    if (d) closedir(d);
    char line[256];
    int threads = -1;
    FILE *f = fopen("/proc/self/status", "r");
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "Threads:", 8)) threads = atoi(line + 8);
    if (f) fclose(f);
    pthread_barrier_wait(&all_here);
    for (int i = 0; i < 3; i++) pthread_join(t[i], NULL);
    printf("/proc/self/task: %d entries, the main thread listed %d; status Threads: %d\n", tasks, self_listed, threads);
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
    count_tasks();
    return 0;
}

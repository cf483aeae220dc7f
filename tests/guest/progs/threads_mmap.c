/* Mapping changes by one thread while others run: mmap, munmap, mprotect must be in
 * effect in every thread once the call has returned. */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#define PAGE 4096
#define READERS 3
#define ROUNDS 40

static _Atomic(long *) published;
static atomic_int round_no, acks, stop;
static long good[READERS];

static void *reader(void *arg) {
    long me = (long)arg;
    int last = 0;
    while (!atomic_load(&stop)) {
        int r = atomic_load(&round_no);
        if (r == last) continue; /* spin: guest code, no syscalls */
        long *d = atomic_load(&published);
        long sum = 0;
        for (int i = 0; i < 1024; i++) sum += d[i];
        if (sum == 1024L * r) good[me]++;
        last = r;
        atomic_fetch_add(&acks, 1);
    }
    return NULL;
}

static sigjmp_buf jump;
static void on_segv(int sig) {
    (void)sig;
    siglongjmp(jump, 1);
}

static atomic_int go, spinning;
static volatile long *probe;
static const char *probe_result;

static void *prober(void *arg) {
    (void)arg;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_segv;
    sigaction(SIGSEGV, &sa, NULL);
    atomic_store(&spinning, 1);
    while (!atomic_load(&go)) {
    }
    if (sigsetjmp(jump, 1) == 0) {
        long v = *probe;
        probe_result = v == 42 ? "read 42" : "read something else";
    } else {
        probe_result = "SIGSEGV";
    }
    return NULL;
}

static const char *probe_with(int what) {
    long *page = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    page[0] = 42;
    probe = page;
    atomic_store(&go, 0);
    atomic_store(&spinning, 0);
    pthread_t t;
    pthread_create(&t, NULL, prober, NULL);
    while (!atomic_load(&spinning)) {
    }
    if (what == 0) munmap(page, PAGE);
    if (what == 1) mprotect(page, PAGE, PROT_NONE);
    if (what == 2) {
        munmap(page, PAGE);
        long *again = mmap(page, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
        again[0] = 42;
    }
    atomic_store(&go, 1);
    pthread_join(t, NULL);
    if (what != 0) munmap(page, PAGE);
    return probe_result;
}

int main(void) {
    pthread_t t[READERS];
    for (long i = 0; i < READERS; i++) pthread_create(&t[i], NULL, reader, (void *)i);
    long *old = NULL;
    for (int r = 1; r <= ROUNDS; r++) {
        long *d = mmap(NULL, 1024 * sizeof(long), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        for (int i = 0; i < 1024; i++) d[i] = r;
        atomic_store(&published, d);
        atomic_store(&acks, 0);
        atomic_store(&round_no, r);
        while (atomic_load(&acks) < READERS) {
        }
        if (old) munmap(old, 1024 * sizeof(long));
        old = d;
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < READERS; i++) {
        pthread_join(t[i], NULL);
        printf("reader %d saw %ld good rounds\n", i, good[i]);
    }
    printf("after munmap: %s\n", probe_with(0));
    printf("after mprotect PROT_NONE: %s\n", probe_with(1));
    printf("after a new mapping in place: %s\n", probe_with(2));
    return 0;
}

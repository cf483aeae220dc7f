#define _GNU_SOURCE
/* futex(2) called directly: errors and edge cases, compared with Linux. */
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static long futex(void *uaddr, int op, uint32_t val, const void *timeout, void *uaddr2, uint32_t val3) {
    return syscall(SYS_futex, uaddr, op, val, timeout, uaddr2, val3);
}

static void show(const char *what, long r) {
    if (r < 0)
        printf("%s: -1 %s\n", what, strerrorname_np(errno));
    else
        printf("%s: %ld\n", what, r);
}

static uint32_t word = 5, word2 = 9;
static _Atomic uint32_t gate;
static atomic_int started;

static void *waiter(void *arg) {
    (void)arg;
    struct timespec huge = {0x7fffffffffffffffL, 999999999L}; /* a timeout that never ends */
    atomic_fetch_add(&started, 1);
    long r = futex(&gate, FUTEX_WAIT_PRIVATE, 0, &huge, NULL, 0);
    return (void *)r;
}

static void settle(void) {
    struct timespec ts = {0, 30 * 1000000L};
    nanosleep(&ts, NULL);
}

int main(void) {
    struct timespec rel = {0, 10 * 1000000L}, bad = {0, 2000000000L};
    show("wait bad address", futex((void *)8, FUTEX_WAIT, 0, NULL, NULL, 0));
    show("wait misaligned", futex((char *)&word + 1, FUTEX_WAIT, 5, NULL, NULL, 0));
    show("bad op", futex(&word, 77, 0, NULL, NULL, 0));
    /* No page there, yet a private wake finds no waiter: Linux only checks that it is a user address. */
    show("wake unmapped private", futex((void *)8, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0));
    show("wake private above the user range", futex((void *)0xffffffffff600000UL, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0));
    show("wake private at the user range's end", futex((void *)0x7ffffffffffcUL, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0));
    char *none = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    none[0] = 1;
    mprotect(none, 4096, PROT_NONE);
    show("wait on PROT_NONE", futex(none, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0));
    show("shared wake on PROT_NONE", futex(none, FUTEX_WAKE, 1, NULL, NULL, 0));
    show("private wake on PROT_NONE", futex(none, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0));
    show("requeue private to a kernel address",
         futex(&word, FUTEX_REQUEUE_PRIVATE, 1, (void *)1, (void *)0x800000000000UL, 0));
    show("wake with CLOCK_REALTIME", futex(&word, FUTEX_WAKE | FUTEX_CLOCK_REALTIME, 1, NULL, NULL, 0));
    show("wait value mismatch", futex(&word, FUTEX_WAIT, 4, NULL, NULL, 0));
    show("wait relative timeout", futex(&word, FUTEX_WAIT_PRIVATE, 5, &rel, NULL, 0));
    show("wait bad timeout", futex(&word, FUTEX_WAIT, 5, &bad, NULL, 0));
    show("wait timeout bad pointer", futex(&word, FUTEX_WAIT, 5, (void *)8, NULL, 0));
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    now.tv_nsec += 10 * 1000000L;
    if (now.tv_nsec >= 1000000000L) now.tv_sec++, now.tv_nsec -= 1000000000L;
    show("wait_bitset monotonic deadline", futex(&word, FUTEX_WAIT_BITSET, 5, &now, NULL, FUTEX_BITSET_MATCH_ANY));
    clock_gettime(CLOCK_REALTIME, &now);
    now.tv_sec -= 1;
    show("wait_bitset realtime past deadline",
         futex(&word, FUTEX_WAIT_BITSET | FUTEX_CLOCK_REALTIME, 5, &now, NULL, FUTEX_BITSET_MATCH_ANY));
    show("wait_bitset zero bitset", futex(&word, FUTEX_WAIT_BITSET, 5, NULL, NULL, 0));
    show("wake_bitset zero bitset", futex(&word, FUTEX_WAKE_BITSET, 1, NULL, NULL, 0));
    show("wake nobody", futex(&word, FUTEX_WAKE, 10, NULL, NULL, 0));
    show("wake private unmapped", futex((void *)4096, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0));
    show("wake shared unmapped", futex((void *)4096, FUTEX_WAKE, 1, NULL, NULL, 0));
    show("cmp_requeue mismatch", futex(&word, FUTEX_CMP_REQUEUE, 1, (void *)1, &word2, 4));
    show("cmp_requeue negative", futex(&word, FUTEX_CMP_REQUEUE, -1, (void *)1, &word2, 5));
    show("wake_op bad op", futex(&word, FUTEX_WAKE_OP, 1, (void *)1, &word2, 0x70000000));
    show("wake_op add", futex(&word, FUTEX_WAKE_OP, 1, (void *)1, &word2, FUTEX_OP(FUTEX_OP_ADD, 3, FUTEX_OP_CMP_EQ, 9)));
    printf("word2 now %u\n", word2);

    /* Three threads wait; wake one, requeue the others onto word2, then wake those. */
    pthread_t t[3];
    for (int i = 0; i < 3; i++) pthread_create(&t[i], NULL, waiter, NULL);
    while (atomic_load(&started) < 3) {
    }
    settle();
    show("cmp_requeue wake 1 move 5", futex(&gate, FUTEX_CMP_REQUEUE_PRIVATE, 1, (void *)5, &word2, 0));
    settle();
    show("wake on the requeued word", futex(&word2, FUTEX_WAKE_PRIVATE, 10, NULL, NULL, 0));
    for (int i = 0; i < 3; i++) {
        void *r;
        pthread_join(t[i], &r);
        printf("waiter %d returned %ld\n", i, (long)r);
    }
    return 0;
}

/* Producer/consumer over a bounded queue with a mutex and two condition variables. */
#include <pthread.h>
#include <stdio.h>

#define ITEMS 2000
#define SLOTS 4
#define CONSUMERS 3

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t not_full = PTHREAD_COND_INITIALIZER, not_empty = PTHREAD_COND_INITIALIZER;
static int queue[SLOTS], head, count, done;
static long sums[CONSUMERS], taken[CONSUMERS];

static void *producer(void *arg) {
    (void)arg;
    for (int i = 1; i <= ITEMS; i++) {
        pthread_mutex_lock(&lock);
        while (count == SLOTS) pthread_cond_wait(&not_full, &lock);
        queue[(head + count) % SLOTS] = i;
        count++;
        pthread_cond_signal(&not_empty);
        pthread_mutex_unlock(&lock);
    }
    pthread_mutex_lock(&lock);
    done = 1;
    pthread_cond_broadcast(&not_empty);
    pthread_mutex_unlock(&lock);
    return NULL;
}

static void *consumer(void *arg) {
    long me = (long)arg;
    for (;;) {
        pthread_mutex_lock(&lock);
        while (count == 0 && !done) pthread_cond_wait(&not_empty, &lock);
        if (count == 0 && done) {
            pthread_mutex_unlock(&lock);
            return NULL;
        }
        int v = queue[head];
        head = (head + 1) % SLOTS;
        count--;
        pthread_cond_signal(&not_full);
        pthread_mutex_unlock(&lock);
        sums[me] += v;
        taken[me]++;
    }
}

int main(void) {
    pthread_t p, c[CONSUMERS];
    for (long i = 0; i < CONSUMERS; i++) pthread_create(&c[i], NULL, consumer, (void *)i);
    pthread_create(&p, NULL, producer, NULL);
    pthread_join(p, NULL);
    long total = 0, items = 0;
    for (int i = 0; i < CONSUMERS; i++) {
        pthread_join(c[i], NULL);
        total += sums[i];
        items += taken[i];
    }
    printf("consumed %ld items, sum %ld\n", items, total);

    /* A timed wait that nobody signals ends with ETIMEDOUT. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 20 * 1000 * 1000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&lock);
    int err = pthread_cond_timedwait(&not_full, &lock, &ts);
    pthread_mutex_unlock(&lock);
    printf("timedwait: %s\n", err == 110 ? "ETIMEDOUT" : "other");
    return 0;
}

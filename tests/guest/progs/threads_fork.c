/* fork in a threaded process: the child's memory is one moment of the parent's, even
 * while another thread keeps storing (x is stored before y, so y > x never holds). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define SPAN (16 << 20)

static _Atomic long *x, *y;
static atomic_int stop;

static void *writer(void *arg) {
    (void)arg;
    for (long i = 1; !stop; i++) {
        atomic_store(x, i);
        atomic_store(y, i);
    }
    return NULL;
}

int main(void) {
    char *m = mmap(NULL, SPAN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (long k = 0; k < SPAN; k += 4096) m[k] = 1; /* data between the two words: the copy takes a while */
    x = (void *)m;
    y = (void *)(m + SPAN - 4096);
    pthread_t t;
    pthread_create(&t, NULL, writer, NULL);
    while (!atomic_load(y)) usleep(1000);
    int torn = 0;
    for (int r = 0; r < 20; r++) {
        pid_t c = fork();
        if (c == 0) {
            long a = *x, b = *y;
            _exit(b > a || a - b > 1);
        }
        int st;
        waitpid(c, &st, 0);
        torn += WEXITSTATUS(st);
    }
    stop = 1;
    pthread_join(t, NULL);
    printf("torn copies: %d of 20\n", torn);
    return 0;
}

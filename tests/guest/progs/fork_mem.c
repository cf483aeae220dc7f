/* fork: the child's memory is a copy (its writes never reach the parent), but
 * MAP_SHARED anonymous memory stays shared; descriptors are shared. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

static int global = 1;
static char bss[8192];

int main(void)
{
    int local = 2;
    char *heap = malloc(100000);
    strcpy(heap, "parent heap");
    char *priv = mmap(NULL, 65536, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int *shared = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    strcpy(priv, "parent private");
    strcpy(bss + 4000, "parent bss");
    *shared = 10;
    int p[2];
    pipe(p);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        global = 100; local = 200;
        strcpy(heap, "child heap"); strcpy(priv, "child private"); strcpy(bss + 4000, "child bss");
        *shared = 42;
        char *more = malloc(1 << 20);  /* the child's own heap growth */
        memset(more, 7, 1 << 20);
        printf("child sees: %d %d %s %s %s %d\n", global, local, heap, priv, bss + 4000, more[12345]);
        fflush(stdout);
        char c = 'x';
        write(p[1], &c, 1);
        _exit(0);
    }
    int st;
    char c;
    read(p[0], &c, 1);
    waitpid(pid, &st, 0);
    printf("parent sees: %d %d %s %s %s\n", global, local, heap, priv, bss + 4000);
    printf("shared anonymous memory: %d\n", *shared);
    printf("byte through the pipe: %c, child status %d\n", c, WEXITSTATUS(st));
    /* A second generation: the grandchild copies the child's memory, not the parent's. */
    pid = fork();
    if (pid == 0) {
        global = 5;
        if (fork() == 0) {
            printf("grandchild sees global %d\n", global);
            _exit(global);
        }
        wait(&st);
        _exit(WEXITSTATUS(st) + 1);
    }
    waitpid(pid, &st, 0);
    printf("child of child exit %d, parent global %d\n", WEXITSTATUS(st), global);
    return 0;
}

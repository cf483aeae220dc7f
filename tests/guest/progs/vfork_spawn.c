/* vfork shares the parent's memory until the child execs or exits; posix_spawn
 * (glibc: clone with CLONE_VM | CLONE_VFORK) runs a program. */
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;
static volatile int seen = 1;

int main(int argc, char **argv)
{
    const char *busybox = argc > 1 ? argv[1] : "/bin/busybox";
    pid_t pid = vfork();
    if (pid == 0) {
        seen = 99;  /* the parent's own variable: vfork shares memory */
        _exit(3);
    }
    int st;
    waitpid(pid, &st, 0);
    printf("after vfork: seen=%d status=%d\n", seen, WEXITSTATUS(st));
    fflush(stdout);
    pid = vfork();
    if (pid == 0) {
        char *args[] = {"busybox", "echo", "exec from a vfork child", NULL};
        execve(busybox, args, environ);
        _exit(127);
    }
    waitpid(pid, &st, 0);
    printf("vfork+exec status=%d\n", WEXITSTATUS(st));
    fflush(stdout);
    char *args[] = {"busybox", "sh", "-c", "echo spawned $0 $1; exit 5", "zero", "one", NULL};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    if (posix_spawn(&pid, busybox, &fa, NULL, args, environ) != 0) {
        perror("posix_spawn");
        return 1;
    }
    waitpid(pid, &st, 0);
    printf("posix_spawn status=%d\n", WEXITSTATUS(st));
    int err = posix_spawn(&pid, "/nonexistent/x", &fa, NULL, args, environ);
    printf("posix_spawn of a missing file: %s\n", strerror(err));
    return 0;
}

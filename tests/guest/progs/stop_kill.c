/* A child that stops itself and would exit 6 the moment it goes on: SIGKILL to it while
   it is stopped ends it by SIGKILL, every time (no guest code runs after the stop). */
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

int main(void) {
    int killed = 0, rounds = 60;
    for (int i = 0; i < rounds; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            raise(SIGSTOP);
            _exit(6);
        }
        int st;
        waitpid(pid, &st, WUNTRACED);
        if (!WIFSTOPPED(st))
            printf("round %d: not stopped: %#x\n", i, st);
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
        if (WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL)
            killed++;
        else
            printf("round %d: status %#x\n", i, st);
    }
    printf("killed while stopped: %d of %d\n", killed, rounds);
    return 0;
}

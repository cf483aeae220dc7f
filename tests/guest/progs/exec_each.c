/* Runs each argument as a program (no arguments of its own) in a child and says
 * how it went: the execve error, or how the child ended. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) {
            char *args[] = {argv[i], NULL};
            execve(argv[i], args, environ);
            printf("%s: %s\n", argv[i], strerror(errno));
            fflush(stdout);
            _exit(100);
        }
        int status;
        if (waitpid(pid, &status, 0) != pid)
            return 2;
        if (WIFSIGNALED(status))
            printf("%s: killed by signal %d\n", argv[i], WTERMSIG(status));
        else if (WEXITSTATUS(status) != 100)
            printf("%s: exit %d\n", argv[i], WEXITSTATUS(status));
    }
    return 0;
}

/* execve: errors as Linux gives them, then the real thing (argv[1] = program, the
 * rest its arguments). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

extern char **environ;

static void try(const char *path)
{
    char *args[] = {(char *)path, NULL};
    execve(path, args, environ);
    printf("%s: %s\n", path, strerror(errno));
}

int main(int argc, char **argv)
{
    try("missing-file");
    try("/etc/hostname/below-a-file");
    try("plain.txt");       /* not executable */
    try("textexec");        /* executable, no #!: ENOEXEC */
    try(".");               /* a directory */
    try("badshebang");      /* #! and nothing else */
    try("badinterp");       /* #! naming a missing interpreter */
    try("loop1");           /* #! loops back on itself */
    char *none[] = {NULL};
    char *volatile bad = (char *)0x10;
    errno = 0;
    execve(bad, none, environ);
    printf("bad pointer: %s\n", strerror(errno));
    if (argc > 1) {
        fflush(stdout);
        execve(argv[1], argv + 1, environ);
        printf("%s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    return 0;
}

/* Print /proc/self/comm (and AT_EXECFN), then re-execute itself through /proc/self/exe once. */
#include <stdio.h>
#include <sys/auxv.h>
#include <unistd.h>

int main(int argc, char **argv) {
    char comm[64] = "";
    FILE *f = fopen("/proc/self/comm", "r");
    if (f == NULL || fgets(comm, sizeof comm, f) == NULL) {
        perror("comm");
        return 1;
    }
    fclose(f);
    printf("argv[0]=%s comm=%s", argv[0], comm);
    printf("execfn=%s\n", (const char *)getauxval(AT_EXECFN));
    fflush(stdout);
    if (argc < 2) {
        char *again[] = {"another-name", "again", NULL};
        execv("/proc/self/exe", again);
        perror("execv");
        return 2;
    }
    return 0;
}

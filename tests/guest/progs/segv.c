/* Writes one line, then stores through a null pointer: dies of SIGSEGV. */
#include <stdio.h>

int main(void)
{
    printf("about to fault\n");
    fflush(stdout);
    *(volatile int *)0 = 1;
    return 0;
}

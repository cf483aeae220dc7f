/* A forked child keeps its parent's FPU and vector state: the SSE rounding mode
 * (MXCSR) and a value held in xmm9 across the fork call. */
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xmmintrin.h>

int main(void)
{
    _mm_setcsr((_mm_getcsr() & ~0x6000u) | 0x4000u);  /* round up */
    volatile double a = 1.0, b = 3.0;
    register double keep asm("xmm9");
    keep = 2.5;
    asm volatile("" : "+x"(keep));
    pid_t pid = fork();
    asm volatile("" : "+x"(keep));
    const char *who = pid == 0 ? "child" : "parent";
    if (pid != 0)
        wait(NULL);
    printf("%s: round up %d, 1/3 = %.17g, xmm9 = %g\n", who, (_mm_getcsr() & 0x6000u) == 0x4000u, a / b, keep);
    return 0;
}

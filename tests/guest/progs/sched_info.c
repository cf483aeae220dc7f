/* The scheduling queries a program makes (nproc, chrt -m, sched_getcpu), with Linux's errors. */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>

#define R(name, expr) do { \
    errno = 0; long r_ = (long)(expr); \
    printf("%-30s %ld %s\n", name, r_, r_ < 0 ? strerrorname_np(errno) : ""); \
} while (0)

int main(void) {
    for (int policy = -1; policy <= 7; policy++) {
        char name[40];
        sprintf(name, "priority max/min, policy %d", policy);
        R(name, syscall(SYS_sched_get_priority_max, policy) * 1000 + syscall(SYS_sched_get_priority_min, policy));
    }
    R("getscheduler self", syscall(SYS_sched_getscheduler, 0));
    R("getscheduler me", syscall(SYS_sched_getscheduler, getpid()));
    R("getscheduler -1", syscall(SYS_sched_getscheduler, -1));
    R("getscheduler nobody", syscall(SYS_sched_getscheduler, 999999));
    struct sched_param sp = {.sched_priority = 7};
    R("getparam", syscall(SYS_sched_getparam, 0, &sp));
    printf("priority %d\n", sp.sched_priority);
    R("getparam, no param", syscall(SYS_sched_getparam, 0, NULL));
    R("getparam, bad param", syscall(SYS_sched_getparam, 0, (void *)1));
    R("getparam nobody", syscall(SYS_sched_getparam, 999999, &sp));
    unsigned cpu = 9999, node = 9999;
    R("getcpu", syscall(SYS_getcpu, &cpu, &node, NULL));
    cpu_set_t set;
    sched_getaffinity(0, sizeof set, &set);
    printf("on a CPU of its mask %d, node %u\n", CPU_ISSET(cpu, &set), node);
    R("getcpu, nothing asked", syscall(SYS_getcpu, NULL, NULL, NULL));
    R("getcpu, bad pointer", syscall(SYS_getcpu, (void *)1, NULL, NULL));
    return 0;
}

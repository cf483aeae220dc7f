/* A dynamically linked program: what its loader and the kernel told it (auxv,
 * /proc/self/exe, maps), and a library loaded at run time with dlopen. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <elf.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <unistd.h>

extern void _start(void);

static int first_phdr(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    *(struct dl_phdr_info *)data = *info;
    return 1; /* the program itself comes first */
}

int main(int argc, char **argv)
{
    struct dl_phdr_info prog;
    dl_iterate_phdr(first_phdr, &prog);
    printf("argv %d %s\n", argc, argv[argc - 1]);
    printf("AT_EXECFN %s\n", (const char *)getauxval(AT_EXECFN));
    printf("AT_ENTRY is _start %d\n", getauxval(AT_ENTRY) == (unsigned long)_start);
    printf("AT_PHDR is the program's %d\n", getauxval(AT_PHDR) == (unsigned long)prog.dlpi_phdr);
    printf("AT_PHNUM %lu %d\n", getauxval(AT_PHNUM), getauxval(AT_PHNUM) == prog.dlpi_phnum);
    printf("AT_PHENT %lu\n", getauxval(AT_PHENT));
    printf("AT_PAGESZ %lu AT_CLKTCK %lu AT_SECURE %lu\n", getauxval(AT_PAGESZ), getauxval(AT_CLKTCK),
           getauxval(AT_SECURE));
    printf("AT_UID is getuid %d\n", getauxval(AT_UID) == getuid());
    printf("AT_HWCAP2 set %d\n", getauxval(AT_HWCAP2) != 0);

    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[n < 0 ? 0 : n] = 0;
    printf("exe %s\n", exe);

    /* AT_BASE is where the loader's first mapping starts, named after its file. */
    unsigned long base = getauxval(AT_BASE);
    FILE *maps = fopen("/proc/self/maps", "r");
    char line[4096], path[4096];
    int base_is_loader = 0, program_mapped = 0;
    while (fgets(line, sizeof line, maps)) {
        unsigned long lo, hi;
        path[0] = 0;
        if (sscanf(line, "%lx-%lx %*s %*s %*s %*s %4095s", &lo, &hi, path) < 2)
            continue;
        if (lo == base && strstr(path, "ld-linux-x86-64.so"))
            base_is_loader = 1;
        if (strcmp(path, exe) == 0)
            program_mapped = 1;
    }
    fclose(maps);
    printf("AT_BASE maps the loader %d, program mapped %d\n", base_is_loader, program_mapped);

    void *libm = dlopen("libm.so.6", RTLD_NOW);
    if (!libm) {
        printf("dlopen: %s\n", dlerror());
        return 1;
    }
    double (*cosine)(double) = (double (*)(double))dlsym(libm, "cos");
    double (*power)(double, double) = (double (*)(double, double))dlsym(libm, "pow");
    printf("cos(1) = %.12f, pow(2, 0.5) = %.12f\n", cosine(1.0), power(2.0, 0.5));
    dlclose(libm);
    return 0;
}

/* alloc: allocates and frees a lot.
 * Many small blocks (served from the break), a few blocks large enough that
 * malloc uses mmap, realloc growth and calloc zeroing; a running checksum over
 * what was written proves the memory kept its contents. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SLOTS 4096

int main(void)
{
	static unsigned char *slot[SLOTS];
	static size_t size[SLOTS];
	uint64_t sum = 0, state = 1;
	long allocs = 0, frees = 0;
	size_t grown = 0;
	unsigned char *big = NULL;

	for (int round = 0; round < 200000; round++) {
		int i;

		state = state * 6364136223846793005ull + 1442695040888963407ull;
		i = (int)((state >> 33) % SLOTS);
		if (slot[i]) {
			for (size_t k = 0; k < size[i]; k += 61)
				sum += slot[i][k];
			free(slot[i]);
			slot[i] = NULL;
			frees++;
		} else {
			size[i] = 16 + (state >> 40) % 2048;
			slot[i] = malloc(size[i]);
			memset(slot[i], (int)(round & 0xFF), size[i]);
			allocs++;
		}
	}
	for (int i = 0; i < SLOTS; i++) {
		if (slot[i])
			frees++;
		free(slot[i]);
	}
	for (int mib = 1; mib <= 32; mib *= 2) {
		unsigned char *p = calloc((size_t)mib << 20, 1);

		if (!p)
			return 1;
		for (size_t k = 0; k < (size_t)mib << 20; k += 4096)
			sum += p[k];
		p[((size_t)mib << 20) - 1] = 7;
		sum += p[((size_t)mib << 20) - 1];
		free(p);
	}
	for (size_t n = 4096; n <= 8u << 20; n *= 2) {
		unsigned char *p = realloc(big, n);

		if (!p)
			return 1;
		big = p;
		big[n - 1] = (unsigned char)n;
		grown = n;
	}
	sum += big[grown - 1];
	free(big);
	printf("%ld allocations, %ld frees, grew to %zu MiB, checksum %llu\n", allocs, frees,
	       grown >> 20, (unsigned long long)sum);
	return 0;
}

/*
 * compute: a compute-bound static program for wall-time comparisons.
 *
 * It counts primes below a bound with a sieve, then mixes a large table
 * with an xorshift generator, and prints one line.  After start-up it makes
 * no syscalls until it prints, so under a syscall-trapping runner its time
 * shows the cost of loading and starting a program, not of serving calls.
 *
 * Usage: compute [ROUNDS]   (default 40; each round is one sieve and one mix)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SIEVE_LIMIT 2000000
#define TABLE_WORDS (1 << 20)

static unsigned char composite[SIEVE_LIMIT];
static uint64_t table[TABLE_WORDS];

static unsigned long count_primes(void)
{
	unsigned long count = 0;

	memset(composite, 0, sizeof(composite));
	for (unsigned long i = 2; i < SIEVE_LIMIT; i++) {
		if (composite[i])
			continue;
		count++;
		for (unsigned long j = i * i; j < SIEVE_LIMIT; j += i)
			composite[j] = 1;
	}
	return count;
}

/* xorshift64: cheap, deterministic, and the compiler cannot fold it away. */
static uint64_t mix(uint64_t state)
{
	for (uint32_t i = 0; i < TABLE_WORDS; i++) {
		state ^= state << 13;
		state ^= state >> 7;
		state ^= state << 17;
		table[(uint32_t)state & (TABLE_WORDS - 1)] += state;
	}
	return state;
}

int main(int argc, char **argv)
{
	long rounds = argc > 1 ? strtol(argv[1], NULL, 10) : 40;
	unsigned long primes = 0;
	uint64_t state = 88172645463325252ULL, sum = 0;

	if (rounds <= 0) {
		fprintf(stderr, "usage: compute [ROUNDS > 0]\n");
		return 2;
	}
	for (long r = 0; r < rounds; r++) {
		primes = count_primes();
		state = mix(state);
	}
	for (uint32_t i = 0; i < TABLE_WORDS; i++)
		sum += table[i];
	printf("primes=%lu checksum=%016llx\n", primes, (unsigned long long)sum);
	return 0;
}

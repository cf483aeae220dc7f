/* primes: sieve of Eratosthenes below N (argv[1], default 200000).
 * Pure computation with one allocation; prints the count, the last five primes
 * and their sum, so a wrong result anywhere in the sieve shows in the output. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 200000;
	char *composite;
	long count = 0, sum = 0, last[5] = {0};

	if (n < 2) {
		printf("no primes below %ld\n", n);
		return 0;
	}
	composite = calloc(n, 1);
	if (!composite)
		return 1;
	for (long i = 2; i * i < n; i++)
		if (!composite[i])
			for (long j = i * i; j < n; j += i)
				composite[j] = 1;
	for (long i = 2; i < n; i++) {
		if (composite[i])
			continue;
		count++;
		sum += i;
		memmove(last, last + 1, sizeof(last) - sizeof(last[0]));
		last[4] = i;
	}
	printf("%ld primes below %ld, sum %ld\n", count, n, sum);
	printf("largest: %ld %ld %ld %ld %ld\n", last[0], last[1], last[2], last[3], last[4]);
	free(composite);
	return 0;
}

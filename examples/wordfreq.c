/* wordfreq: the ten most frequent words of a file (argv[1]).
 * Exercises open/read/close on a real file through stdio, and a hash table in
 * the heap.  Words are runs of letters, folded to lower case; ties are broken
 * alphabetically so the output never depends on hashing order. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct word {
	char *text;
	long count;
	struct word *next;
};

#define BUCKETS 4096

static struct word *table[BUCKETS];
static long distinct;

static unsigned long hash(const char *s)
{
	unsigned long h = 5381;

	while (*s)
		h = h * 33 + (unsigned char)*s++;
	return h % BUCKETS;
}

static void add(const char *s)
{
	struct word **slot = &table[hash(s)];
	struct word *w;

	for (w = *slot; w; w = w->next)
		if (!strcmp(w->text, s)) {
			w->count++;
			return;
		}
	w = malloc(sizeof(*w));
	w->text = strdup(s);
	w->count = 1;
	w->next = *slot;
	*slot = w;
	distinct++;
}

static int by_count(const void *a, const void *b)
{
	const struct word *x = *(struct word *const *)a, *y = *(struct word *const *)b;

	if (x->count != y->count)
		return x->count < y->count ? 1 : -1;
	return strcmp(x->text, y->text);
}

int main(int argc, char **argv)
{
	char buf[64];
	size_t len = 0;
	long total = 0;
	int c;
	FILE *f;
	struct word **all;
	long n = 0;

	if (argc != 2) {
		fprintf(stderr, "usage: wordfreq FILE\n");
		return 2;
	}
	f = fopen(argv[1], "r");
	if (!f) {
		perror(argv[1]);
		return 1;
	}
	do {
		c = fgetc(f);
		if (c != EOF && isalpha(c)) {
			if (len < sizeof(buf) - 1)
				buf[len++] = (char)tolower(c);
			continue;
		}
		if (len) {
			buf[len] = 0;
			add(buf);
			total++;
			len = 0;
		}
	} while (c != EOF);
	fclose(f);

	all = malloc(sizeof(*all) * (distinct ? distinct : 1));
	for (int i = 0; i < BUCKETS; i++)
		for (struct word *w = table[i]; w; w = w->next)
			all[n++] = w;
	qsort(all, n, sizeof(*all), by_count);
	printf("%ld words, %ld distinct\n", total, distinct);
	for (long i = 0; i < n && i < 10; i++)
		printf("%6ld %s\n", all[i]->count, all[i]->text);
	return 0;
}

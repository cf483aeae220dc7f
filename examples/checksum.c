/* checksum: CRC-32 and FNV-1a of a generated buffer of N KiB (argv[1], default 4096).
 * The buffer comes from a fixed-seed xorshift generator, so every run checksums
 * the same bytes; a large heap buffer means a large mmap in the guest. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static uint32_t crc_table[256];

static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;

		for (int k = 0; k < 8; k++)
			c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
		crc_table[i] = c;
	}
}

int main(int argc, char **argv)
{
	size_t kib = argc > 1 ? strtoul(argv[1], NULL, 10) : 4096;
	size_t len = kib * 1024;
	unsigned char *buf = malloc(len ? len : 1);
	uint64_t x = 0x9E3779B97F4A7C15ull;
	uint32_t crc = 0xFFFFFFFFu;
	uint64_t fnv = 0xCBF29CE484222325ull;

	if (!buf)
		return 1;
	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		buf[i] = (unsigned char)x;
	}
	crc_init();
	for (size_t i = 0; i < len; i++) {
		crc = crc_table[(crc ^ buf[i]) & 0xFF] ^ (crc >> 8);
		fnv = (fnv ^ buf[i]) * 0x100000001B3ull;
	}
	printf("%zu KiB  crc32 %08x  fnv1a %016llx\n", kib, crc ^ 0xFFFFFFFFu, (unsigned long long)fnv);
	free(buf);
	return 0;
}

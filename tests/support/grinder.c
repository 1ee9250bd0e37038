/*
 * grinder: finds the lowest nonce that makes an 80-byte Bitcoin block header's double SHA-256
 * meet a target. A test tool: the Stratum test miner (tests/support/stratum_miner.ts) compiles
 * it with `gcc -O2 grinder.c -lcrypto -lpthread` and runs it, since JavaScript is far too slow
 * for the ~2^32 hashes a difficulty-1 share needs.
 *
 * Usage: grinder HEADER_HEX TARGET_HEX [START_NONCE [COUNT [THREADS [MAX_SECONDS]]]]
 *   HEADER_HEX   160 hex chars, the serialized header (its nonce field is ignored)
 *   TARGET_HEX   64 hex chars, the target as a big-endian number; the header hash read as a
 *                little-endian number (as Bitcoin compares them) must be <= it
 *   START_NONCE  first nonce to try (default 0)
 *   COUNT        how many nonces to try (default all up to 0xffffffff)
 *   THREADS      worker threads (default: online CPUs)
 *   MAX_SECONDS  give up after this long, 0 = never (default 0)
 *
 * Prints one line and exits 0 when found, 1 when not found, 2 on bad usage:
 *   FOUND nonce=N hash=DISPLAY_HEX hashes=H seconds=S rate=R
 *   NOTFOUND hashes=H seconds=S rate=R
 * N is the lowest nonce in the range that meets the target, whatever the thread count.
 *
 * Hashing uses OpenSSL's SHA-256 (SHA-NI where the CPU has it) with the header's first 64
 * bytes hashed once (midstate).
 */
#define _GNU_SOURCE
#include <openssl/sha.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

#define CHUNK 65536ULL

static unsigned char header[80];
static unsigned char target_le[32];
static uint64_t range_start, range_end; /* [start, end) */
static double max_seconds;
static struct timespec started;
static SHA256_CTX midstate;

static atomic_ullong next_chunk;
static atomic_ullong best_nonce; /* UINT64_MAX until found */
static atomic_ullong total_hashes;
static atomic_int timed_out;

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static int parse_hex(const char *hex, unsigned char *out, size_t len)
{
	if (strlen(hex) != len * 2)
		return -1;
	for (size_t i = 0; i < len; i++) {
		int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return -1;
		out[i] = (unsigned char)(hi << 4 | lo);
	}
	return 0;
}

static double elapsed(void)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - started.tv_sec) + (double)(now.tv_nsec - started.tv_nsec) / 1e9;
}

/* hash and target both little-endian 256-bit numbers */
static int meets_target(const unsigned char *hash)
{
	for (int i = 31; i >= 0; i--) {
		if (hash[i] < target_le[i])
			return 1;
		if (hash[i] > target_le[i])
			return 0;
	}
	return 1;
}

/* SHA-256 of the header = one compression of the second 64-byte block (nonce inside, padding
 * precomputed) from the midstate; the second SHA-256 is one compression of a padded 32-byte
 * block from the standard initial state. SHA256_Transform runs OpenSSL's block function alone. */
static void *worker(void *arg)
{
	unsigned char block2[64] = {0}, block3[64] = {0}, hash[32];
	SHA256_CTX ctx, iv;

	(void)arg;
	memcpy(block2, header + 64, 16);
	block2[16] = 0x80;
	block2[62] = 0x02; /* 640 bits */
	block2[63] = 0x80;
	block3[32] = 0x80;
	block3[62] = 0x01; /* 256 bits */
	SHA256_Init(&iv);
	for (;;) {
		uint64_t chunk = atomic_fetch_add(&next_chunk, 1);
		uint64_t lo = range_start + chunk * CHUNK, hi, n;

		if (lo >= range_end || lo > atomic_load(&best_nonce))
			break;
		if (atomic_load(&timed_out))
			break;
		if (max_seconds > 0 && elapsed() > max_seconds) {
			atomic_store(&timed_out, 1);
			break;
		}
		hi = lo + CHUNK < range_end ? lo + CHUNK : range_end;
		for (n = lo; n < hi; n++) {
			uint32_t nonce = (uint32_t)n;

			block2[12] = nonce & 0xff;
			block2[13] = (nonce >> 8) & 0xff;
			block2[14] = (nonce >> 16) & 0xff;
			block2[15] = (nonce >> 24) & 0xff;
			ctx = midstate;
			SHA256_Transform(&ctx, block2);
			for (int i = 0; i < 8; i++) {
				block3[4 * i] = ctx.h[i] >> 24;
				block3[4 * i + 1] = ctx.h[i] >> 16;
				block3[4 * i + 2] = ctx.h[i] >> 8;
				block3[4 * i + 3] = ctx.h[i];
			}
			ctx = iv;
			SHA256_Transform(&ctx, block3);
			/* hash bytes 28..31 are the big-endian bytes of h[7]: a cheap reject first */
			if ((ctx.h[7] & 0xff) > target_le[31])
				continue;
			for (int i = 0; i < 8; i++) {
				hash[4 * i] = ctx.h[i] >> 24;
				hash[4 * i + 1] = ctx.h[i] >> 16;
				hash[4 * i + 2] = ctx.h[i] >> 8;
				hash[4 * i + 3] = ctx.h[i];
			}
			if (meets_target(hash)) {
				uint64_t cur = atomic_load(&best_nonce);

				while (n < cur && !atomic_compare_exchange_weak(&best_nonce, &cur, n))
					;
				n++;
				break;
			}
		}
		atomic_fetch_add(&total_hashes, n - lo);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	unsigned char target_be[32];
	long threads;
	uint64_t count;
	pthread_t *tids;

	if (argc < 3 || parse_hex(argv[1], header, 80) || parse_hex(argv[2], target_be, 32)) {
		fprintf(stderr, "usage: %s HEADER_HEX(160) TARGET_HEX(64) [START [COUNT [THREADS [MAX_SECONDS]]]]\n",
			argv[0]);
		return 2;
	}
	for (int i = 0; i < 32; i++)
		target_le[i] = target_be[31 - i];
	range_start = argc > 3 ? strtoull(argv[3], NULL, 0) : 0;
	count = argc > 4 ? strtoull(argv[4], NULL, 0) : 0;
	threads = argc > 5 ? strtol(argv[5], NULL, 0) : 0;
	max_seconds = argc > 6 ? strtod(argv[6], NULL) : 0;
	if (range_start > 0xffffffffULL) {
		fprintf(stderr, "START must be a 32-bit nonce\n");
		return 2;
	}
	range_end = 0x100000000ULL;
	if (count && range_start + count < range_end)
		range_end = range_start + count;
	if (threads <= 0)
		threads = sysconf(_SC_NPROCESSORS_ONLN);
	if (threads <= 0)
		threads = 1;

	SHA256_Init(&midstate);
	SHA256_Update(&midstate, header, 64);
	atomic_store(&best_nonce, UINT64_MAX);
	clock_gettime(CLOCK_MONOTONIC, &started);

	tids = calloc((size_t)threads, sizeof(*tids));
	for (long i = 0; i < threads; i++)
		pthread_create(&tids[i], NULL, worker, NULL);
	for (long i = 0; i < threads; i++)
		pthread_join(tids[i], NULL);
	free(tids);

	double secs = elapsed();
	unsigned long long hashes = atomic_load(&total_hashes);
	double rate = secs > 0 ? (double)hashes / secs : 0;
	uint64_t best = atomic_load(&best_nonce);

	if (best != UINT64_MAX) {
		unsigned char full[80], first[32], second[32];

		memcpy(full, header, 80);
		full[76] = best & 0xff;
		full[77] = (best >> 8) & 0xff;
		full[78] = (best >> 16) & 0xff;
		full[79] = (best >> 24) & 0xff;
		SHA256(full, 80, first);
		SHA256(first, 32, second);
		printf("FOUND nonce=%llu hash=", (unsigned long long)best);
		for (int i = 31; i >= 0; i--)
			printf("%02x", second[i]);
		printf(" hashes=%llu seconds=%.3f rate=%.0f\n", hashes, secs, rate);
		return 0;
	}
	printf("NOTFOUND hashes=%llu seconds=%.3f rate=%.0f\n", hashes, secs, rate);
	return 1;
}

/*
 * What one wake-up of a sleeping thread costs in CPU on this machine, without any runtime:
 * the floor under every wake-up of the collector's threads (bench/wake_cost.ts prints it
 * beside the same measure for a Deno worker).
 *
 *   wake_cost ITERATIONS
 *
 * Prints one JSON object: microseconds of the thread's own CPU per wake-up of
 * - "timed": a futex wait that times out after 2 ms (the receive thread's gathering);
 * - "notified": a futex wait another thread wakes every 2 ms (a reader woken by the spool's
 *   head at ordinary rates), the waiter's CPU per wake-up.
 */
#define _GNU_SOURCE
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static atomic_int word;
static int iterations;

static double thread_cpu_us(void)
{
	struct timespec t;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
	return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static void futex_wait(atomic_int *address, int value, const struct timespec *timeout)
{
	syscall(SYS_futex, address, FUTEX_WAIT_PRIVATE, value, timeout, NULL, 0);
}

/* Sleeps until the word moves, every time it does; returns its CPU per wake-up. */
static void *waiter(void *unused)
{
	double *cpu = malloc(sizeof(*cpu));
	double start = thread_cpu_us();
	int seen = 0;

	(void)unused;
	while (seen < iterations) {
		futex_wait(&word, seen, NULL);
		seen = atomic_load(&word);
	}
	*cpu = (thread_cpu_us() - start) / iterations;
	return cpu;
}

int main(int argc, char **argv)
{
	struct timespec two_ms = { 0, 2000000 };
	atomic_int never = 0;
	pthread_t thread;
	double *notified;
	double start, timed;

	iterations = argc > 1 ? atoi(argv[1]) : 2000;
	start = thread_cpu_us();
	for (int i = 0; i < iterations; i++)
		futex_wait(&never, 0, &two_ms);
	timed = (thread_cpu_us() - start) / iterations;

	/* Every 2 ms, as the receive thread publishes a frame's head at ordinary rates. */
	pthread_create(&thread, NULL, waiter, NULL);
	for (int i = 0; i < iterations; i++) {
		clock_nanosleep(CLOCK_MONOTONIC, 0, &two_ms, NULL);
		atomic_fetch_add(&word, 1);
		syscall(SYS_futex, &word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
	}
	pthread_join(thread, (void **)&notified);
	printf("{\"timed\":%.2f,\"notified\":%.2f}\n", timed, *notified);
	return 0;
}

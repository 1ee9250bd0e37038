/*
 * Test driver for patches/tbg_events.c (GPLv3, like the emitter).
 *
 * Usage: emitter_driver SOCKET_PATH
 *
 * Runs the emitter against a socket it binds itself and checks what arrives
 * with jansson. Every datagram received is printed as "DGRAM <json>", counters
 * as "STAT <name>=<value>", each failed check as "FAIL <what>". Exits 0 only
 * when every check passed. Reads use SO_RCVTIMEO, so nothing waits forever.
 */

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "tbg_events.h"

static int failures;
static uint64_t reports[64];
static int nreports;
static int report_err;

#define CHECK(cond, ...) do { \
	if (!(cond)) { \
		printf("FAIL line %d: ", __LINE__); \
		printf(__VA_ARGS__); \
		printf("\n"); \
		failures++; \
	} \
} while (0)

static void on_failure(uint64_t failed, int err)
{
	if (nreports < 64)
		reports[nreports++] = failed;
	report_err = err;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int bind_receiver(const char *path)
{
	struct sockaddr_un addr;
	struct timeval tv = { 5, 0 };
	int fd, size = 8 * 1024 * 1024;

	unlink(path);
	fd = socket(AF_UNIX, SOCK_DGRAM, 0);
	if (fd < 0)
		return -1;
	memset(&addr, 0, sizeof(addr));
	addr.sun_family = AF_UNIX;
	strncpy(addr.sun_path, path, sizeof(addr.sun_path) - 1);
	if (bind(fd, (struct sockaddr *)&addr, sizeof(addr))) {
		close(fd);
		return -1;
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
	return fd;
}

/* Receives one datagram, checks the envelope, prints it; returns its seq or 0 */
static uint64_t receive_one(int fd, const char *event, uint64_t after, bool print)
{
	static char buf[65536];
	json_error_t jerr;
	json_t *val, *data;
	const char *s;
	ssize_t n;
	uint64_t seq = 0;

	n = recv(fd, buf, sizeof(buf) - 1, 0);
	if (n < 0) {
		CHECK(0, "recv for %s: %s", event ? event : "event", strerror(errno));
		return 0;
	}
	buf[n] = '\0';
	CHECK(strlen(buf) == (size_t)n, "datagram holds a NUL byte");
	CHECK(!strchr(buf, '\n'), "datagram holds a raw newline");
	if (print)
		printf("DGRAM %s\n", buf);
	val = json_loads(buf, 0, &jerr);
	if (!val) {
		CHECK(0, "not JSON (%s): %s", jerr.text, buf);
		return 0;
	}
	s = json_string_value(json_object_get(val, "event"));
	CHECK(s && (!event || !strcmp(s, event)), "event %s, wanted %s", s ? s : "(none)",
	      event ? event : "any");
	CHECK(json_is_real(json_object_get(val, "ts")), "ts is not a real");
	CHECK(json_real_value(json_object_get(val, "ts")) > 1.6e9, "ts not epoch seconds");
	s = json_string_value(json_object_get(val, "source"));
	CHECK(s && !strcmp(s, "hosted"), "source %s", s ? s : "(none)");
	s = json_string_value(json_object_get(val, "emitter"));
	CHECK(s && !strcmp(s, tbg_events_emitter()), "emitter %s", s ? s : "(none)");
	CHECK(json_is_integer(json_object_get(val, "seq")), "seq is not an integer");
	seq = (uint64_t)json_integer_value(json_object_get(val, "seq"));
	CHECK(seq > after, "seq %" PRIu64 " not above %" PRIu64, seq, after);
	data = json_object_get(val, "data");
	CHECK(json_is_object(data), "data is not an object");
	json_decref(val);
	return seq;
}

static void check_no_listener(const char *path)
{
	double start;
	int i, ret;

	unlink(path);
	CHECK(!tbg_init_events(path), "init without a listener: %s", strerror(errno));
	CHECK(strlen(tbg_events_emitter()) == 16, "emitter id %s", tbg_events_emitter());
	CHECK(tbg_events_sndbuf() >= 65536, "SO_SNDBUF only %d", tbg_events_sndbuf());
	nreports = 0;
	start = now_s();
	for (i = 0; i < 10; i++) {
		ret = tbg_emit_share_submitted("u", "u.w", i, 1, 1, true, NULL, "127.0.0.1", false);
		CHECK(ret == -1, "send without a listener returned %d", ret);
	}
	CHECK(now_s() - start < 1.0, "sending without a listener took %.3fs", now_s() - start);
	CHECK(tbg_events_seq() == 10, "seq %" PRIu64 " after 10 tries", tbg_events_seq());
	CHECK(tbg_events_failed() == 10, "failed %" PRIu64 " after 10 tries",
	      tbg_events_failed());
	CHECK(tbg_events_sent() == 0, "sent %" PRIu64 " without a listener", tbg_events_sent());
	/* Reported at 1, 2, 4 and 8 failures, not at each one */
	CHECK(nreports == 4 && reports[0] == 1 && reports[1] == 2 && reports[2] == 4 &&
	      reports[3] == 8, "failure reports: %d", nreports);
	CHECK(report_err == ENOENT, "reported errno %d, wanted ENOENT", report_err);
	printf("STAT no_listener_failed=%" PRIu64 "\n", tbg_events_failed());
	printf("STAT no_listener_reports=%d\n", nreports);
	printf("STAT no_listener_seconds=%.6f\n", now_s() - start);
}

static const char *long_name(void)
{
	static char buf[2100];
	size_t i = 10;

	/* A worker of "é" repeated past TBG_MAX_FIELD, then one ASCII byte */
	memcpy(buf, "tb1qblock.", i);
	for (; i + 2 < sizeof(buf) - 2; i += 2)
		memcpy(buf + i, "\xc3\xa9", 2);
	buf[i++] = 'x';
	buf[i] = '\0';
	return buf;
}

/* One event of every type, with hostile names, each checked on arrival */
static void check_every_event(int rx)
{
	uint64_t seq;

	seq = tbg_events_seq();
	tbg_emit_share_submitted("tb1q\"quote\\back", "tb1q\"quote\\back.rig\"1\\", 7, 2.5,
				 3.75, true, "ignored when accepted", "10.0.0.1", false);
	seq = receive_one(rx, "share_submitted", seq, true);
	tbg_emit_share_submitted(NULL, "tb1qctl_w\x01\t\n\x1f\x7f", 8, 1, -1, false,
				 "Above target", "::1", true);
	seq = receive_one(rx, "share_submitted", seq, true);
	tbg_emit_miner_connected("tb1qutf8", "tb1qutf8.w\xc3\xb6rker-\xe6\x97\xa5-\xf0\x9f\x9a\x80",
				 9, "192.0.2.1", "bitaxe/\"2.0\"\\", 42);
	seq = receive_one(rx, "miner_connected", seq, true);
	tbg_emit_miner_disconnected("tb1qbad", "tb1qbad.\xff\xfe\xc3(\xc0\xaf\xed\xa0\x80z", 10,
				    NULL, 61.5, 12, 3);
	seq = receive_one(rx, "miner_disconnected", seq, true);
	tbg_emit_block_found("tb1qblock", long_name(), 200123,
			     "00000000000000000001abcdef0123456789abcdef0123456789abcdef012345",
			     1234567.5, 1000000, 312500000, NULL);
	seq = receive_one(rx, "block_found", seq, true);
	tbg_emit_new_block_network(200124, "0000000000000000000fedcba", 1000000.25, NULL);
	seq = receive_one(rx, "new_block_network", seq, true);
	tbg_emit_new_block_network(200125, "00000000000000000000aaaa", 1, "0000000000000000000fedcba");
	seq = receive_one(rx, "new_block_network", seq, true);
	tbg_emit_share_best_diff("tb1qbest", "tb1qbest", 99999.5, 1234.25, "round");
	seq = receive_one(rx, "share_best_diff", seq, true);
	tbg_emit_diff_updated("tb1qdiff", "tb1qdiff.vardiff", 11, 1024, 2048.5);
	seq = receive_one(rx, "diff_updated", seq, true);
	tbg_emit_hashrate_update("tb1qrate", "tb1qrate_s19", 1.1e14, 9.5e13, -3, NAN);
	seq = receive_one(rx, "hashrate_update", seq, true);
	CHECK(seq == tbg_events_seq(), "last seq %" PRIu64 " vs %" PRIu64, seq,
	      tbg_events_seq());
}

/* A receiver that reads nothing: sends must fail fast, counted */
static void check_full_queue(int rx)
{
	uint64_t tried = tbg_events_seq(), failed = tbg_events_failed();
	double start = now_s();
	int i;

	(void)rx;
	for (i = 0; i < 20000; i++)
		tbg_emit_share_submitted("tb1qflood", "tb1qflood.w", i, 1, 1, true, NULL, "", false);
	CHECK(now_s() - start < 5.0, "20000 sends to a full queue took %.3fs", now_s() - start);
	CHECK(tbg_events_seq() == tried + 20000, "seq did not count every try");
	CHECK(tbg_events_failed() > failed, "a full queue caused no counted failure");
	CHECK(tbg_events_sent() + tbg_events_failed() == tbg_events_seq(),
	      "sent %" PRIu64 " + failed %" PRIu64 " != tried %" PRIu64, tbg_events_sent(),
	      tbg_events_failed(), tbg_events_seq());
	CHECK(report_err == EAGAIN || report_err == EWOULDBLOCK || report_err == ENOBUFS,
	      "full queue reported errno %d", report_err);
	printf("STAT full_queue_failed=%" PRIu64 "\n", tbg_events_failed() - failed);
	printf("STAT full_queue_seconds=%.6f\n", now_s() - start);
}

#define THREADS 4
#define PER_THREAD 5000

static void *emit_thread(void *arg)
{
	long t = (long)arg;
	int i;

	for (i = 0; i < PER_THREAD; i++)
		tbg_emit_share_submitted("tb1qthread", "tb1qthread.t", t, 1, i, true, NULL, "",
					 false);
	return NULL;
}

/* Several threads at once: every seq used once, sent + failed == tried */
static void check_threads(const char *path)
{
	static unsigned char seen[THREADS * PER_THREAD + 1];
	uint64_t total = THREADS * PER_THREAD, received = 0, dupes = 0, seq;
	pthread_t th[THREADS];
	struct timeval tv = { 0, 200000 };
	long t;
	int rx;

	rx = bind_receiver(path);
	CHECK(rx >= 0, "bind %s: %s", path, strerror(errno));
	if (rx < 0)
		return;
	CHECK(!tbg_init_events(path), "re-init: %s", strerror(errno));
	for (t = 0; t < THREADS; t++)
		pthread_create(&th[t], NULL, emit_thread, (void *)t);
	/* Drain while they send; stop 200 ms after the last datagram */
	setsockopt(rx, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	for (;;) {
		char buf[4096];
		json_t *val;
		ssize_t n = recv(rx, buf, sizeof(buf) - 1, 0);

		if (n < 0)
			break;
		buf[n] = '\0';
		val = json_loads(buf, 0, NULL);
		CHECK(val, "thread datagram is not JSON");
		if (!val)
			continue;
		seq = (uint64_t)json_integer_value(json_object_get(val, "seq"));
		json_decref(val);
		CHECK(seq >= 1 && seq <= total, "seq %" PRIu64 " out of range", seq);
		if (seq < 1 || seq > total)
			continue;
		if (seen[seq]++)
			dupes++;
		received++;
	}
	for (t = 0; t < THREADS; t++)
		pthread_join(th[t], NULL);
	CHECK(tbg_events_seq() == total, "seq %" PRIu64 " after %" PRIu64 " tries",
	      tbg_events_seq(), total);
	CHECK(!dupes, "%" PRIu64 " seq numbers arrived twice", dupes);
	CHECK(received == tbg_events_sent(), "received %" PRIu64 " but sent %" PRIu64,
	      received, tbg_events_sent());
	CHECK(tbg_events_sent() + tbg_events_failed() == total,
	      "sent %" PRIu64 " + failed %" PRIu64 " != %" PRIu64, tbg_events_sent(),
	      tbg_events_failed(), total);
	printf("STAT threads_tried=%" PRIu64 "\n", total);
	printf("STAT threads_received=%" PRIu64 "\n", received);
	printf("STAT threads_failed=%" PRIu64 "\n", tbg_events_failed());
	close(rx);
	unlink(path);
}

static void check_disabled(void)
{
	char path[200];

	CHECK(!tbg_init_events(NULL), "init(NULL) failed");
	CHECK(!tbg_events_enabled(), "enabled without a path");
	CHECK(tbg_emit_miner_connected("u", "u", 1, "", "", 1) == -1, "sent while disabled");
	CHECK(tbg_events_seq() == 0 && tbg_events_failed() == 0, "disabled emitter counted");
	memset(path, 'a', sizeof(path) - 1);
	path[sizeof(path) - 1] = '\0';
	errno = 0;
	CHECK(tbg_init_events(path) == -1 && errno == ENAMETOOLONG, "over-long path accepted");
	CHECK(!tbg_events_enabled(), "enabled after a failed init");
	CHECK(!strcmp(tbg_worker_suffix("a.b.c"), "b.c"), "suffix of a.b.c");
	CHECK(!strcmp(tbg_worker_suffix("a_b"), "b"), "suffix of a_b");
	CHECK(!strcmp(tbg_worker_suffix("abc"), ""), "suffix of abc");
	CHECK(!strcmp(tbg_worker_suffix(NULL), ""), "suffix of NULL");
}

int main(int argc, char **argv)
{
	char first_emitter[17];
	int rx;

	if (argc != 2) {
		fprintf(stderr, "usage: %s SOCKET_PATH\n", argv[0]);
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	tbg_events_on_failure(on_failure);

	check_no_listener(argv[1]);
	snprintf(first_emitter, sizeof(first_emitter), "%s", tbg_events_emitter());

	rx = bind_receiver(argv[1]);
	CHECK(rx >= 0, "bind %s: %s", argv[1], strerror(errno));
	if (rx < 0)
		return 1;
	/* A fresh init: new emitter id, seq from 1 again */
	CHECK(!tbg_init_events(argv[1]), "init: %s", strerror(errno));
	CHECK(strcmp(first_emitter, tbg_events_emitter()), "emitter id did not change");
	CHECK(tbg_events_seq() == 0, "seq not reset by init");
	check_every_event(rx);
	check_full_queue(rx);
	close(rx);
	unlink(argv[1]);

	check_threads(argv[1]);
	check_disabled();
	tbg_close_events();

	printf("STAT failures=%d\n", failures);
	return failures ? 1 : 0;
}

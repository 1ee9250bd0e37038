/*
 * TheBitcoinGame event emitter for ckpool.
 *
 * Copyright 2025 TheBitcoinGame contributors
 *
 * This program is free software; you can redistribute it and/or modify it
 * under the terms of the GNU General Public License as published by the Free
 * Software Foundation; either version 3 of the License, or (at your option)
 * any later version.  See COPYING for more details.
 *
 * One JSON object per datagram:
 * {"event":"share_submitted","ts":1708617600.123456,"source":"hosted",
 *  "seq":4711,"emitter":"0123456789abcdef","data":{...}}
 * seq counts every event this emitter tried to send, from 1; emitter is a
 * random id picked at start, so (emitter, seq) names one event even across
 * restarts. JSON is built with jansson: names come from miners and may hold
 * anything. Sends never block: a full or absent receiver costs the event, and
 * the loss is counted and reported at a bounded rate.
 *
 * apply-patches.sh copies this file into ckpool's src/ and includes it from
 * stratifier.c; it also compiles on its own for the tests.
 */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "tbg_events.h"

static int tbg_fd = -1;
static struct sockaddr_un tbg_addr;
static socklen_t tbg_addrlen;
static char tbg_path[sizeof(tbg_addr.sun_path)];
static char tbg_emitter[17];
static int tbg_sndbuf;

/* Updated atomically: several ckpool threads emit at once */
static uint64_t tbg_seq;
static uint64_t tbg_sent;
static uint64_t tbg_failed;
static tbg_fail_cb tbg_fail_hook;

static uint64_t tbg_random_id(void)
{
	struct timespec ts;
	uint64_t id = 0;
	int fd;

	fd = open("/dev/urandom", O_RDONLY);
	if (fd >= 0) {
		ssize_t got = read(fd, &id, sizeof(id));

		close(fd);
		if (got == (ssize_t)sizeof(id) && id)
			return id;
	}
	clock_gettime(CLOCK_REALTIME, &ts);
	id = (uint64_t)ts.tv_sec << 32 ^ (uint64_t)ts.tv_nsec ^ (uint64_t)getpid() << 16;
	return id ? id : 1;
}

int tbg_init_events(const char *path)
{
	int fd, size = TBG_SNDBUF_BYTES, flags;
	socklen_t len = sizeof(tbg_sndbuf);

	tbg_close_events();
	__atomic_store_n(&tbg_seq, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&tbg_sent, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&tbg_failed, 0, __ATOMIC_RELAXED);
	tbg_path[0] = tbg_emitter[0] = 0;
	if (!path || !*path)
		return 0;
	if (strlen(path) >= sizeof(tbg_addr.sun_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	fd = socket(AF_UNIX, SOCK_DGRAM, 0);
	if (fd < 0)
		return -1;
	flags = fcntl(fd, F_GETFD);
	if (flags >= 0)
		fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
	flags = fcntl(fd, F_GETFL);
	if (flags >= 0)
		fcntl(fd, F_SETFL, flags | O_NONBLOCK);
	/* Best effort: the kernel caps it at net.core.wmem_max */
	setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
	if (getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &tbg_sndbuf, &len))
		tbg_sndbuf = 0;

	memset(&tbg_addr, 0, sizeof(tbg_addr));
	tbg_addr.sun_family = AF_UNIX;
	strcpy(tbg_addr.sun_path, path);
	tbg_addrlen = sizeof(tbg_addr);
	strcpy(tbg_path, path);
	snprintf(tbg_emitter, sizeof(tbg_emitter), "%016" PRIx64, tbg_random_id());
	__atomic_store_n(&tbg_fd, fd, __ATOMIC_RELEASE);
	return 0;
}

void tbg_close_events(void)
{
	int fd = __atomic_exchange_n(&tbg_fd, -1, __ATOMIC_ACQ_REL);

	if (fd >= 0)
		close(fd);
}

void tbg_events_on_failure(tbg_fail_cb cb)
{
	__atomic_store_n(&tbg_fail_hook, cb, __ATOMIC_RELEASE);
}

bool tbg_events_enabled(void)
{
	return __atomic_load_n(&tbg_fd, __ATOMIC_ACQUIRE) >= 0;
}

const char *tbg_events_path(void)
{
	return tbg_path;
}

const char *tbg_events_emitter(void)
{
	return tbg_emitter;
}

int tbg_events_sndbuf(void)
{
	return tbg_sndbuf;
}

uint64_t tbg_events_seq(void)
{
	return __atomic_load_n(&tbg_seq, __ATOMIC_RELAXED);
}

uint64_t tbg_events_sent(void)
{
	return __atomic_load_n(&tbg_sent, __ATOMIC_RELAXED);
}

uint64_t tbg_events_failed(void)
{
	return __atomic_load_n(&tbg_failed, __ATOMIC_RELAXED);
}

const char *tbg_worker_suffix(const char *workername)
{
	const char *sep;

	if (!workername)
		return "";
	sep = workername + strcspn(workername, "._");
	return *sep ? sep + 1 : "";
}

static void tbg_count_failure(int err)
{
	uint64_t failed = __atomic_add_fetch(&tbg_failed, 1, __ATOMIC_RELAXED);
	tbg_fail_cb cb;

	/* Report at 1, 2, 4, 8, ... failures */
	if (failed & (failed - 1))
		return;
	cb = __atomic_load_n(&tbg_fail_hook, __ATOMIC_ACQUIRE);
	if (cb)
		cb(failed, err);
	else
		fprintf(stderr, "tbg_events: %" PRIu64 " event(s) not sent to %s, last error: %s\n",
			failed, tbg_path, strerror(err));
}

/* Length of the valid UTF-8 character at s, 0 if it is not one */
static size_t tbg_utf8_len(const unsigned char *s, size_t avail)
{
	uint32_t cp;
	size_t len, i;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		len = 2;
		cp = s[0] & 0x1f;
	} else if ((s[0] & 0xf0) == 0xe0) {
		len = 3;
		cp = s[0] & 0x0f;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		len = 4;
		cp = s[0] & 0x07;
	} else
		return 0;
	if (avail < len)
		return 0;
	for (i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
		return 0;
	if (cp >= 0xd800 && cp <= 0xdfff)
		return 0;
	return len;
}

/* A JSON string of at most TBG_MAX_FIELD bytes of valid UTF-8: invalid bytes
 * become U+FFFD, a longer string is cut at a character boundary. */
static json_t *tbg_string(const char *s, size_t len)
{
	const unsigned char *in = (const unsigned char *)s;
	char buf[TBG_MAX_FIELD];
	size_t pos = 0, out = 0, n;
	json_t *val;

	while (s && pos < len) {
		n = tbg_utf8_len(in + pos, len - pos);
		if (n) {
			if (out + n > sizeof(buf))
				break;
			memcpy(buf + out, in + pos, n);
			pos += n;
		} else {
			n = 3;
			if (out + n > sizeof(buf))
				break;
			memcpy(buf + out, "\xef\xbf\xbd", n);
			pos++;
		}
		out += n;
	}
	val = json_stringn(buf, out);
	return val ? val : json_string("");
}

static void tbg_set_str(json_t *obj, const char *key, const char *s)
{
	json_object_set_new(obj, key, tbg_string(s, s ? strlen(s) : 0));
}

/* Every number in the contract is non-negative and finite */
static void tbg_set_num(json_t *obj, const char *key, double v)
{
	json_object_set_new(obj, key, json_real(isfinite(v) && v > 0 ? v : 0));
}

static void tbg_set_int(json_t *obj, const char *key, int64_t v)
{
	json_object_set_new(obj, key, json_integer(v > 0 ? v : 0));
}

/* user and worker as the game knows them: the user name (a BTC address in
 * solo mode) and the worker part of the workername, "" if there is none */
static void tbg_set_user(json_t *obj, const char *user, const char *workername)
{
	if (user && *user)
		tbg_set_str(obj, "user", user);
	else if (workername)
		json_object_set_new(obj, "user",
				    tbg_string(workername, strcspn(workername, "._")));
	else
		tbg_set_str(obj, "user", "");
	tbg_set_str(obj, "worker", tbg_worker_suffix(workername));
}

/* A new data object holding user and worker, or NULL while disabled */
static json_t *tbg_user_data(const char *user, const char *workername)
{
	json_t *data;

	if (!tbg_events_enabled())
		return NULL;
	data = json_object();
	tbg_set_user(data, user, workername);
	return data;
}

static double tbg_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)(ts.tv_nsec / 1000) / 1e6;
}

/* Wraps data (reference stolen) in the envelope and sends it */
static int tbg_send(const char *event, json_t *data)
{
	int fd = __atomic_load_n(&tbg_fd, __ATOMIC_ACQUIRE), err = ENOMEM;
	json_t *val = json_object();
	char emitter[sizeof(tbg_emitter)];
	uint64_t seq;
	ssize_t ret;
	size_t len;
	char *s;

	if (fd < 0) {
		json_decref(data);
		json_decref(val);
		return -1;
	}
	seq = __atomic_add_fetch(&tbg_seq, 1, __ATOMIC_RELAXED);
	memcpy(emitter, tbg_emitter, sizeof(emitter));
	json_object_set_new(val, "event", json_string(event));
	json_object_set_new(val, "ts", json_real(tbg_now()));
	json_object_set_new(val, "source", json_string(TBG_EVENT_SOURCE));
	json_object_set_new(val, "seq", json_integer((json_int_t)seq));
	json_object_set_new(val, "emitter", json_string(emitter));
	json_object_set_new(val, "data", data ? data : json_object());
	/* 16 significant digits keep ts at microseconds */
	s = json_dumps(val, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(16));
	json_decref(val);
	if (!s) {
		tbg_count_failure(err);
		return -1;
	}
	len = strlen(s);
	do {
		ret = sendto(fd, s, len, MSG_DONTWAIT, (struct sockaddr *)&tbg_addr, tbg_addrlen);
	} while (ret < 0 && errno == EINTR);
	err = errno;
	free(s);
	if (ret != (ssize_t)len) {
		tbg_count_failure(ret < 0 ? err : EMSGSIZE);
		return -1;
	}
	__atomic_add_fetch(&tbg_sent, 1, __ATOMIC_RELAXED);
	return 0;
}

int tbg_emit_share_submitted(const char *user, const char *workername, int64_t client_id,
			     double diff, double sdiff, bool accepted,
			     const char *reject_reason, const char *ip, bool is_block)
{
	json_t *data = tbg_user_data(user, workername);

	if (!data)
		return -1;
	tbg_set_int(data, "client_id", client_id);
	tbg_set_num(data, "diff", diff);
	tbg_set_num(data, "sdiff", sdiff);
	json_object_set_new(data, "accepted", json_boolean(accepted));
	tbg_set_str(data, "reject_reason", accepted ? "" : reject_reason);
	tbg_set_str(data, "ip", ip);
	json_object_set_new(data, "is_block", json_boolean(is_block));
	return tbg_send("share_submitted", data);
}

int tbg_emit_miner_connected(const char *user, const char *workername, int64_t client_id,
			     const char *ip, const char *useragent, double initial_diff)
{
	json_t *data = tbg_user_data(user, workername);

	if (!data)
		return -1;
	tbg_set_int(data, "client_id", client_id);
	tbg_set_str(data, "ip", ip);
	tbg_set_str(data, "useragent", useragent);
	tbg_set_num(data, "initial_diff", initial_diff);
	return tbg_send("miner_connected", data);
}

int tbg_emit_miner_disconnected(const char *user, const char *workername, int64_t client_id,
				const char *ip, double session_duration, int64_t shares_session,
				int64_t rejects_session)
{
	json_t *data = tbg_user_data(user, workername);

	if (!data)
		return -1;
	tbg_set_int(data, "client_id", client_id);
	tbg_set_str(data, "ip", ip);
	tbg_set_num(data, "session_duration", session_duration);
	tbg_set_int(data, "shares_session", shares_session);
	tbg_set_int(data, "rejects_session", rejects_session);
	return tbg_send("miner_disconnected", data);
}

int tbg_emit_block_found(const char *user, const char *workername, int64_t height,
			 const char *hash, double diff, double network_diff,
			 int64_t reward_sats, const char *coinbase_sig)
{
	json_t *data = tbg_user_data(user, workername);

	if (!data)
		return -1;
	tbg_set_int(data, "height", height);
	tbg_set_str(data, "hash", hash);
	tbg_set_num(data, "diff", diff);
	tbg_set_num(data, "network_diff", network_diff);
	tbg_set_int(data, "reward_sats", reward_sats);
	tbg_set_str(data, "coinbase_sig", coinbase_sig);
	return tbg_send("block_found", data);
}

int tbg_emit_new_block_network(int64_t height, const char *hash, double diff,
			       const char *prev_hash)
{
	json_t *data;

	if (!tbg_events_enabled())
		return -1;
	data = json_object();
	tbg_set_int(data, "height", height);
	tbg_set_str(data, "hash", hash);
	tbg_set_num(data, "diff", diff);
	if (prev_hash)
		tbg_set_str(data, "prev_hash", prev_hash);
	return tbg_send("new_block_network", data);
}

int tbg_emit_diff_updated(const char *user, const char *workername, int64_t client_id,
			  double old_diff, double new_diff)
{
	json_t *data = tbg_user_data(user, workername);

	if (!data)
		return -1;
	tbg_set_int(data, "client_id", client_id);
	tbg_set_num(data, "old_diff", old_diff);
	tbg_set_num(data, "new_diff", new_diff);
	return tbg_send("diff_updated", data);
}

int tbg_emit_hashrate_update(const char *user, const char *workername, double hashrate_1m,
			     double hashrate_5m, double hashrate_1h, double hashrate_1d)
{
	json_t *data = tbg_user_data(user, workername);

	if (!data)
		return -1;
	tbg_set_num(data, "hashrate_1m", hashrate_1m);
	tbg_set_num(data, "hashrate_5m", hashrate_5m);
	tbg_set_num(data, "hashrate_1h", hashrate_1h);
	tbg_set_num(data, "hashrate_1d", hashrate_1d);
	return tbg_send("hashrate_update", data);
}

int tbg_emit_share_best_diff(const char *user, const char *workername, double new_best,
			     double prev_best, const char *timeframe)
{
	json_t *data = tbg_user_data(user, workername);

	if (!data)
		return -1;
	tbg_set_num(data, "new_best", new_best);
	tbg_set_num(data, "prev_best", prev_best);
	tbg_set_str(data, "timeframe", timeframe);
	return tbg_send("share_best_diff", data);
}

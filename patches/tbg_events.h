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
 * Sends one JSON datagram per mining event on an AF_UNIX SOCK_DGRAM socket,
 * never blocking the caller. Every function may be called from any thread
 * once tbg_init_events() has returned.
 */

#ifndef TBG_EVENTS_H
#define TBG_EVENTS_H

#include <stdbool.h>
#include <stdint.h>

/* Where the event collector listens when the config names no path */
#define TBG_DEFAULT_SOCKET_PATH "/tmp/ckpool/events.sock"

/* The "source" of every event this emitter sends */
#ifndef TBG_EVENT_SOURCE
#define TBG_EVENT_SOURCE "hosted"
#endif

/* Send buffer asked for; the kernel may cap it at net.core.wmem_max */
#define TBG_SNDBUF_BYTES (4 * 1024 * 1024)

/* Seconds between hashrate_update rounds when the config sets none */
#define TBG_HASHRATE_INTERVAL 60

/* Longest string field in bytes, cut at a UTF-8 character boundary */
#define TBG_MAX_FIELD 512

/* Called when the count of failed sends reaches 1, 2, 4, 8, ... with that
 * count and the errno of the failure, so loss is reported at a bounded rate. */
typedef void (*tbg_fail_cb)(uint64_t failed, int err);

/* Opens the socket that sends to path and picks this emitter's random id.
 * Call once, before any thread emits. A NULL or empty path leaves the emitter
 * disabled. Returns 0, or -1 with errno set. */
int tbg_init_events(const char *path);
/* Closes the socket; later events are dropped without counting */
void tbg_close_events(void);
/* Replaces the failure report (default: a line on stderr); NULL restores it */
void tbg_events_on_failure(tbg_fail_cb cb);

bool tbg_events_enabled(void);
const char *tbg_events_path(void);
/* 16 lowercase hex digits, chosen at each tbg_init_events() */
const char *tbg_events_emitter(void);
/* Send buffer the kernel granted, in bytes */
int tbg_events_sndbuf(void);
/* Events tried (the last seq), sent, and failed since tbg_init_events() */
uint64_t tbg_events_seq(void);
uint64_t tbg_events_sent(void);
uint64_t tbg_events_failed(void);

/* The part of a ckpool workername after the first '.' or '_', or "" */
const char *tbg_worker_suffix(const char *workername);

/* Each tbg_emit_* returns 0 once the datagram is sent, -1 otherwise.
 * user is the user name (a BTC address in solo mode); when NULL or empty it
 * is taken from workername as ckpool does. NULL strings are sent as "". */
int tbg_emit_share_submitted(const char *user, const char *workername, int64_t client_id,
			     double diff, double sdiff, bool accepted,
			     const char *reject_reason, const char *ip, bool is_block);
int tbg_emit_miner_connected(const char *user, const char *workername, int64_t client_id,
			     const char *ip, const char *useragent, double initial_diff);
int tbg_emit_miner_disconnected(const char *user, const char *workername, int64_t client_id,
				const char *ip, double session_duration, int64_t shares_session,
				int64_t rejects_session);
int tbg_emit_block_found(const char *user, const char *workername, int64_t height,
			 const char *hash, double diff, double network_diff,
			 int64_t reward_sats, const char *coinbase_sig);
/* prev_hash may be NULL: the field is then left out */
int tbg_emit_new_block_network(int64_t height, const char *hash, double diff,
			       const char *prev_hash);
int tbg_emit_diff_updated(const char *user, const char *workername, int64_t client_id,
			  double old_diff, double new_diff);
/* Hashrates in hashes per second */
int tbg_emit_hashrate_update(const char *user, const char *workername, double hashrate_1m,
			     double hashrate_5m, double hashrate_1h, double hashrate_1d);
int tbg_emit_share_best_diff(const char *user, const char *workername, double new_best,
			     double prev_best, const char *timeframe);

#endif /* TBG_EVENTS_H */

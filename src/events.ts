/**
 * The event contract: what one datagram from the patched ckpool may hold.
 *
 * Known event types are validated and their `data` filled with safe defaults, so a
 * partial event is still accepted. Unknown types keep their `data` as sent (forward
 * compatibility). Fields an emitter adds that the contract does not know are kept.
 *
 * @module
 */
import { z } from "zod";

/** Longest string accepted in any field; datagrams are small, this only stops abuse. */
const MAX_TEXT = 1024;

const text = (fallback = "") => z.string().max(MAX_TEXT).default(fallback);
const nonNegative = () => z.number().nonnegative().default(0);
const count = () => z.int().nonnegative().default(0);

/** Payload schemas of the event types ckpool emits, by event name. */
export const dataSchemas = {
  share_submitted: z.looseObject({
    user: text(),
    worker: text(),
    client_id: count(),
    diff: nonNegative(),
    sdiff: nonNegative(),
    // A share whose outcome is not stated is not credited.
    accepted: z.boolean().default(false),
    reject_reason: text(),
    ip: text(),
  }),
  block_found: z.looseObject({
    user: text(),
    worker: text(),
    height: count(),
    hash: text(),
    diff: nonNegative(),
    network_diff: nonNegative(),
    reward_sats: count(),
    coinbase_sig: text(),
  }),
  miner_connected: z.looseObject({
    user: text(),
    worker: text(),
    client_id: count(),
    ip: text(),
    useragent: text(),
    initial_diff: nonNegative(),
  }),
  miner_disconnected: z.looseObject({
    user: text(),
    worker: text(),
    client_id: count(),
    ip: text(),
    session_duration: nonNegative(),
    shares_session: count(),
  }),
  diff_updated: z.looseObject({
    user: text(),
    worker: text(),
    client_id: count(),
    old_diff: nonNegative(),
    new_diff: nonNegative(),
  }),
  hashrate_update: z.looseObject({
    user: text(),
    worker: text(),
    hashrate_1m: nonNegative(),
    hashrate_5m: nonNegative(),
    hashrate_1h: nonNegative(),
    hashrate_1d: nonNegative(),
  }),
  new_block_network: z.looseObject({
    height: count(),
    hash: text(),
    diff: nonNegative(),
    prev_hash: text(),
  }),
  share_best_diff: z.looseObject({
    user: text(),
    worker: text(),
    new_best: nonNegative(),
    prev_best: nonNegative(),
    timeframe: text(),
  }),
} as const;

/** Event types with a schema. */
export type KnownEventType = keyof typeof dataSchemas;

/** Every known event type, in contract order. */
export const KNOWN_EVENT_TYPES: readonly KnownEventType[] = Object.freeze(
  Object.keys(dataSchemas) as KnownEventType[],
);

/** Payload of a known event type after defaults are applied. */
export type EventData<T extends KnownEventType> = z.output<(typeof dataSchemas)[T]>;

/** Who produced the event: the hosted pool, a miner's proxy, or a self-hosted pool. */
export const EVENT_SOURCES = ["hosted", "proxy", "self-hosted"] as const;
export type EventSource = (typeof EVENT_SOURCES)[number];

const envelopeSchema = z.object({
  // The name becomes part of a Redis key (`mining:{event}`), so it is kept to a safe alphabet.
  event: z.string().regex(/^[a-z][a-z0-9_]{0,63}$/),
  // Up to the end of year 9999, the last instant PostgreSQL's timestamptz and JS dates share.
  ts: z.number().positive().max(253402300799),
  source: z.enum(EVENT_SOURCES),
  seq: z.int().nonnegative().optional(),
  emitter: z.string().regex(/^[0-9a-f]{1,32}$/).optional(),
  data: z.record(z.string(), z.unknown()).default({}),
});

/** One validated mining event. */
export interface MiningEvent {
  /** Event type, e.g. `share_submitted`; may be a type this collector does not know. */
  readonly event: string;
  /** Epoch seconds with sub-second precision, as the emitter stamped it. */
  readonly ts: number;
  readonly source: EventSource;
  /** Per-emitter counter, +1 for every event the emitter tried to send. */
  readonly seq?: number;
  /** Random id an emitter picks at start, so (emitter, seq) names one event. */
  readonly emitter?: string;
  /** Payload; for known types validated and completed with defaults. */
  readonly data: Readonly<Record<string, unknown>>;
}

/** Outcome of {@link parseEvent}. */
export type ParseResult =
  | { readonly ok: true; readonly event: MiningEvent }
  | {
    readonly ok: false;
    readonly reason: "invalid_envelope" | "invalid_data";
    readonly detail: string;
  };

/** Whether an event type has a schema in this collector. */
export function isKnownEventType(type: string): type is KnownEventType {
  return Object.hasOwn(dataSchemas, type);
}

/**
 * Validates a decoded JSON value against the contract.
 *
 * @param value the result of `JSON.parse` on one datagram
 */
export function parseEvent(value: unknown): ParseResult {
  const envelope = envelopeSchema.safeParse(value);
  if (!envelope.success) {
    return { ok: false, reason: "invalid_envelope", detail: summarize(envelope.error) };
  }
  const event = envelope.data;
  if (!isKnownEventType(event.event)) return { ok: true, event };
  const data = dataSchemas[event.event].safeParse(event.data);
  if (!data.success) {
    return { ok: false, reason: "invalid_data", detail: summarize(data.error) };
  }
  return { ok: true, event: { ...event, data: data.data } };
}

function summarize(error: z.ZodError): string {
  return error.issues
    .slice(0, 3)
    .map((issue) => `${issue.path.join(".") || "(root)"}: ${issue.message}`)
    .join("; ");
}

/**
 * The event contract: what one datagram from the patched ckpool may hold.
 *
 * Known event types are validated and their `data` filled with safe defaults, so a
 * partial event is still accepted. Unknown types keep their `data` as sent (forward
 * compatibility). Fields an emitter adds that the contract does not know are kept. Any
 * payload a sink could not store exactly as sent (NUL, lone surrogates, numbers out of
 * range, a `__proto__` key, nesting past {@link MAX_DATA_DEPTH}) is refused.
 *
 * @module
 */
import { z } from "zod";
import { eventId } from "./event_identity.ts";

/** Longest string accepted in any field; datagrams are small, this only stops abuse. */
const MAX_TEXT = 1024;

/** How one payload field is checked, and the value a missing field gets. */
export type FieldKind = "text" | "nonNegative" | "count" | "flag";

const zodField = {
  text: () => z.string().max(MAX_TEXT).default(""),
  nonNegative: () => z.number().nonnegative().default(0),
  count: () => z.int().nonnegative().default(0),
  // Only `accepted` is a flag: a share whose outcome is not stated is not credited.
  flag: () => z.boolean().default(false),
} as const;

type FieldsOf<T> = { readonly [name: string]: T };
type ZodShape<F extends FieldsOf<FieldKind>> = {
  -readonly [K in keyof F]: ReturnType<(typeof zodField)[F[K]]>;
};

/** The payload fields of the event types ckpool emits, by event name, and how each is checked. */
export const EVENT_FIELDS = {
  share_submitted: {
    user: "text",
    worker: "text",
    client_id: "count",
    diff: "nonNegative",
    sdiff: "nonNegative",
    accepted: "flag",
    reject_reason: "text",
    ip: "text",
  },
  block_found: {
    user: "text",
    worker: "text",
    height: "count",
    hash: "text",
    diff: "nonNegative",
    network_diff: "nonNegative",
    reward_sats: "count",
    coinbase_sig: "text",
  },
  miner_connected: {
    user: "text",
    worker: "text",
    client_id: "count",
    ip: "text",
    useragent: "text",
    initial_diff: "nonNegative",
  },
  miner_disconnected: {
    user: "text",
    worker: "text",
    client_id: "count",
    ip: "text",
    session_duration: "nonNegative",
    shares_session: "count",
  },
  diff_updated: {
    user: "text",
    worker: "text",
    client_id: "count",
    old_diff: "nonNegative",
    new_diff: "nonNegative",
  },
  hashrate_update: {
    user: "text",
    worker: "text",
    hashrate_1m: "nonNegative",
    hashrate_5m: "nonNegative",
    hashrate_1h: "nonNegative",
    hashrate_1d: "nonNegative",
  },
  new_block_network: {
    height: "count",
    hash: "text",
    diff: "nonNegative",
    prev_hash: "text",
  },
  share_best_diff: {
    user: "text",
    worker: "text",
    new_best: "nonNegative",
    prev_best: "nonNegative",
    timeframe: "text",
  },
} as const satisfies FieldsOf<FieldsOf<FieldKind>>;

function schemaOf<F extends FieldsOf<FieldKind>>(fields: F) {
  const shape = Object.fromEntries(
    Object.entries(fields).map(([name, kind]) => [name, zodField[kind]()]),
  );
  return z.looseObject(shape as ZodShape<F>);
}

/**
 * Payload schemas of the event types ckpool emits, by event name: the reference for what is
 * valid, and the source of every rejection's message (the fast path below only ever says
 * "valid, here is the result" or "ask zod").
 */
export const dataSchemas = Object.fromEntries(
  Object.entries(EVENT_FIELDS).map(([type, fields]) => [type, schemaOf(fields)]),
) as {
  readonly [T in keyof typeof EVENT_FIELDS]: ReturnType<typeof schemaOf<(typeof EVENT_FIELDS)[T]>>;
};

/** Event types with a schema. */
export type KnownEventType = keyof typeof dataSchemas;

/** Every known event type, in contract order. */
export const KNOWN_EVENT_TYPES: readonly KnownEventType[] = Object.freeze(
  Object.keys(dataSchemas) as KnownEventType[],
);

/** Who produced the event: the hosted pool, a miner's proxy, or a self-hosted pool. */
export const EVENT_SOURCES = ["hosted", "proxy", "self-hosted"] as const;
export type EventSource = (typeof EVENT_SOURCES)[number];

/** An event's name: it becomes part of a Redis key (`mining:{event}`), so a safe alphabet. */
const EVENT_NAME = /^[a-z][a-z0-9_]{0,63}$/;
/** An emitter id: up to 32 hex digits (the patched ckpool sends 16). */
const EMITTER = /^[0-9a-f]{1,32}$/;
/**
 * Latest `ts` accepted, 9999-12-31T23:59:59Z: the last instant PostgreSQL's timestamptz and
 * JS dates share.
 */
export const MAX_TS = 253402300799;

const envelopeSchema = z.object({
  event: z.string().regex(EVENT_NAME),
  ts: z.number().positive().max(MAX_TS),
  source: z.enum(EVENT_SOURCES),
  seq: z.int().nonnegative().optional(),
  emitter: z.string().regex(EMITTER).optional(),
  data: z.record(z.string(), z.unknown()).default({}),
});

/** One validated mining event. */
export interface MiningEvent {
  /**
   * Identity: the same for every delivery of the same event (rule in `event_identity.ts`),
   * `{emitter}:{seq}` or `sha256:` and 32 hex digits.
   */
  readonly id: string;
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
 * Validates a decoded JSON value against the contract and gives the event its identity.
 *
 * @param value the result of `JSON.parse` on one datagram
 * @param bytes the datagram the value was parsed from; an event without `emitter` and `seq`
 *   is identified by the hash of these bytes, or, when they are not given (events built in
 *   code), of `JSON.stringify(value)`
 */
export function parseEvent(value: unknown, bytes?: Uint8Array): ParseResult {
  const fast = fastEvent(value);
  if (fast !== undefined) return withIdentity(fast, value, bytes);
  return parseEventWithSchemas(value, bytes);
}

/**
 * {@link parseEvent} through the zod schemas alone, without the fast path: the reference the
 * fast path must agree with (tests compare the two), and where every rejection comes from.
 */
export function parseEventWithSchemas(value: unknown, bytes?: Uint8Array): ParseResult {
  const envelope = envelopeSchema.safeParse(value);
  if (!envelope.success) {
    return { ok: false, reason: "invalid_envelope", detail: summarize(envelope.error) };
  }
  // On the datagram's own `data`: the envelope schema's copy has already lost a `__proto__` key.
  const problem = payloadProblem((value as { data?: unknown }).data);
  if (problem !== undefined) return { ok: false, reason: "invalid_data", detail: problem };
  const event = envelope.data;
  let data = event.data;
  if (isKnownEventType(event.event)) {
    const parsed = dataSchemas[event.event].safeParse(event.data);
    if (!parsed.success) {
      return { ok: false, reason: "invalid_data", detail: summarize(parsed.error) };
    }
    data = parsed.data;
  }
  return withIdentity({ ...event, data }, value, bytes);
}

function withIdentity(
  event: Omit<MiningEvent, "id">,
  value: unknown,
  bytes: Uint8Array | undefined,
): ParseResult {
  let id: string;
  try {
    id = eventId(event.emitter, event.seq, bytes ?? (() => JSON.stringify(value)));
  } catch (error) {
    // Only a value built in code (a cycle, a BigInt) gets here: a datagram always has bytes.
    return { ok: false, reason: "invalid_envelope", detail: `not JSON: ${String(error)}` };
  }
  return { ok: true, event: { id, ...event } };
}

const SOURCES: ReadonlySet<unknown> = new Set(EVENT_SOURCES);

/** Marks a value the fast path cannot decide on; zod decides instead. */
const UNDECIDED = Symbol("undecided");

/**
 * What a field of each kind becomes, for the plain cases only: anything else (a string that
 * may be too long, a number that may not be finite, a wrong type) is {@link UNDECIDED}.
 */
const fastField: Record<FieldKind, (value: unknown) => unknown> = {
  text: (value) =>
    value === undefined
      ? ""
      : typeof value === "string" && value.length <= MAX_TEXT
      ? value
      : UNDECIDED,
  nonNegative: (value) =>
    value === undefined
      ? 0
      : typeof value === "number" && value >= 0 && value <= Number.MAX_VALUE
      ? value
      : UNDECIDED,
  count: (value) =>
    value === undefined
      ? 0
      : Number.isSafeInteger(value) && (value as number) >= 0
      ? value
      : UNDECIDED,
  flag: (value) => value === undefined ? false : typeof value === "boolean" ? value : UNDECIDED,
};

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * The event zod would make of `value`, built without zod for the common case (it is most of
 * the cost of receiving an event), or `undefined` when the value is anything but plainly
 * valid. Gives the same result as the schemas, key order included; tests hold it to that.
 */
function fastEvent(value: unknown): Omit<MiningEvent, "id"> | undefined {
  if (!isPlainObject(value)) return undefined;
  const { event, ts, source, seq, emitter } = value;
  const data = value.data === undefined ? {} : value.data;
  if (
    typeof event !== "string" || !EVENT_NAME.test(event) ||
    typeof ts !== "number" || !(ts > 0 && ts <= MAX_TS) ||
    !SOURCES.has(source) ||
    (seq !== undefined && !(Number.isSafeInteger(seq) && (seq as number) >= 0)) ||
    (emitter !== undefined && !(typeof emitter === "string" && EMITTER.test(emitter))) ||
    !isPlainObject(data) || Object.getPrototypeOf(data) !== Object.prototype ||
    payloadProblem(data) !== undefined
  ) {
    return undefined;
  }
  let checked: Record<string, unknown> = { ...data };
  if (isKnownEventType(event)) {
    const fields: FieldsOf<FieldKind> = EVENT_FIELDS[event];
    checked = {};
    for (const name in fields) {
      const field = fastField[fields[name]](data[name]);
      if (field === UNDECIDED) return undefined;
      checked[name] = field;
    }
    for (const name in data) {
      if (!Object.hasOwn(fields, name)) checked[name] = data[name];
    }
  }
  const result: Record<string, unknown> = { event, ts, source };
  if (seq !== undefined) result.seq = seq;
  if (emitter !== undefined) result.emitter = emitter;
  result.data = checked;
  return result as Omit<MiningEvent, "id">;
}

/** Deepest nesting of objects and arrays in `data`, `data` itself being the first level. */
export const MAX_DATA_DEPTH = 32;

/** Why a string cannot be stored as it is, or undefined. */
function textProblem(text: string): string | undefined {
  if (text.includes("\0")) return "holds NUL (\\u0000), which PostgreSQL text cannot store";
  if (!text.isWellFormed()) return "holds a lone surrogate (\\ud800-\\udfff unpaired)";
  return undefined;
}

function childPath(path: string, key: string, inArray: boolean): string {
  const name = key.length > 40 ? `${key.slice(0, 40)}...` : key;
  return inArray ? `${path}[${name}]` : `${path}.${name}`;
}

/**
 * Why a payload cannot reach every sink exactly as sent, or undefined. Checked for every
 * type, known or not, since every payload is stored: PostgreSQL text and jsonb hold no NUL
 * and no lone surrogate (the sink would have to strip or replace them); a number past
 * ±1.8e308 parses to Infinity, which JSON writes back as null; zod turns a `__proto__` key
 * into the prototype of its copy, so the field would vanish; and deep nesting overflows
 * consumers that recurse (PostgreSQL's JSON parser, Python's `json`). Iterative, so deep
 * input costs no stack; a flat payload, all ckpool sends, costs one pass over its fields.
 */
function payloadProblem(data: unknown): string | undefined {
  if (typeof data !== "object" || data === null) return undefined;
  const pending: [container: object, path: string, depth: number][] = [[data, "data", 1]];
  for (let next = pending.pop(); next !== undefined; next = pending.pop()) {
    const [container, path, depth] = next;
    const inArray = Array.isArray(container);
    for (const key in container) {
      if (!inArray) {
        if (key === "__proto__") return `${path}: a key named __proto__ cannot be kept`;
        const problem = textProblem(key);
        if (problem !== undefined) return `${childPath(path, key, false)}: the key ${problem}`;
      }
      const value = (container as Record<string, unknown>)[key];
      if (typeof value === "string") {
        const problem = textProblem(value);
        if (problem !== undefined) return `${childPath(path, key, inArray)} ${problem}`;
      } else if (typeof value === "number") {
        if (!Number.isFinite(value)) {
          return `${childPath(path, key, inArray)}: ${value} is not a finite number`;
        }
      } else if (typeof value === "object" && value !== null) {
        if (depth >= MAX_DATA_DEPTH) {
          return `${childPath(path, key, inArray)}: nested deeper than ${MAX_DATA_DEPTH} levels`;
        }
        pending.push([value, childPath(path, key, inArray), depth + 1]);
      }
    }
  }
  return undefined;
}

function summarize(error: z.ZodError): string {
  return error.issues
    .slice(0, 3)
    .map((issue) => `${issue.path.join(".") || "(root)"}: ${issue.message}`)
    .join("; ");
}

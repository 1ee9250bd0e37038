/**
 * The event contract: what one datagram from the patched ckpool may hold.
 *
 * The contract itself is `contract/events.json`: every known type, its fields, their kinds and
 * defaults. Known event types are validated and their `data` filled with safe defaults, so a
 * partial event is still accepted; only a `block_found` must carry its `height` and `hash`, as
 * a block the game announces must be a real one. Unknown types keep their `data` as sent (forward
 * compatibility). Fields an emitter adds that the contract does not know are kept. Any
 * payload a sink could not store exactly as sent (NUL, lone surrogates, numbers out of
 * range, a `__proto__` key, nesting past {@link MAX_DATA_DEPTH}) is refused.
 *
 * @module
 */
import { z } from "zod";
import contract from "../contract/events.json" with { type: "json" };
import { eventId } from "./event_identity.ts";

/** Longest string accepted in any field; datagrams are small, this only stops abuse. */
export const MAX_TEXT: number = contract.types.text.maxLength;

/** A block hash as bitcoind shows it. */
export const BLOCK_HASH = new RegExp(contract.types.blockHash.pattern);
/** The lowest block height a `block_found` may carry. */
export const MIN_HEIGHT: number = contract.types.positiveCount.minimum;

/** How one payload field is checked (`contract/events.json`, `types`). */
export type FieldKind = keyof typeof contract.types;

/** Event types with a schema: those of `contract/events.json`. */
export type KnownEventType = keyof typeof contract.events;

/** How each kind is checked, and the value a missing field gets (none: the field is required). */
const zodField: Record<FieldKind, () => z.ZodType> = {
  text: () => z.string().max(MAX_TEXT).default(contract.types.text.default),
  nonNegative: () => z.number().nonnegative().default(contract.types.nonNegative.default),
  count: () => z.int().nonnegative().default(contract.types.count.default),
  // Only `accepted` and `is_block` are flags: an outcome that is not stated is not credited.
  flag: () => z.boolean().default(contract.types.flag.default),
  positiveCount: () => z.int().min(MIN_HEIGHT),
  blockHash: () => z.string().regex(BLOCK_HASH, "must be 64 hex digits"),
};

type FieldsOf<T> = { readonly [name: string]: T };

function isFieldKind(kind: string): kind is FieldKind {
  return Object.hasOwn(zodField, kind);
}

/**
 * The payload fields of the event types ckpool emits, by event name, and how each is checked,
 * read from `contract/events.json`; a contract naming a kind this module cannot check stops
 * the import.
 */
export const EVENT_FIELDS: { readonly [T in KnownEventType]: FieldsOf<FieldKind> } = Object
  .freeze(
    Object.fromEntries(
      Object.entries(contract.events).map(([type, { fields }]) => [
        type,
        Object.freeze(Object.fromEntries(
          Object.entries(fields).map(([name, { type: kind }]) => {
            if (!isFieldKind(kind)) {
              throw new Error(`contract/events.json: ${type}.${name} has unknown type ${kind}`);
            }
            return [name, kind];
          }),
        )),
      ]),
    ) as { [T in KnownEventType]: FieldsOf<FieldKind> },
  );

function schemaOf(fields: FieldsOf<FieldKind>) {
  return z.looseObject(
    Object.fromEntries(Object.entries(fields).map(([name, kind]) => [name, zodField[kind]()])),
  );
}

/**
 * Payload schemas of the event types ckpool emits, by event name: the reference for what is
 * valid, and the source of every rejection's message (the fast path below only ever says
 * "valid, here is the result" or "ask zod").
 */
export const dataSchemas = Object.fromEntries(
  Object.entries(EVENT_FIELDS).map(([type, fields]) => [type, schemaOf(fields)]),
) as { readonly [T in KnownEventType]: ReturnType<typeof schemaOf> };

/** Every known event type, in contract order. */
export const KNOWN_EVENT_TYPES: readonly KnownEventType[] = Object.freeze(
  Object.keys(dataSchemas) as KnownEventType[],
);

/** Who produced the event: the hosted pool, a miner's proxy, or a self-hosted pool. */
export const EVENT_SOURCES = ["hosted", "proxy", "self-hosted"] as const;
export type EventSource = (typeof EVENT_SOURCES)[number];

/** An event's name: it becomes part of a Redis key (`mining:{event}`), so a safe alphabet. */
export const EVENT_NAME = new RegExp(contract.envelope.event.pattern);
/** An emitter id: up to 32 hex digits (the patched ckpool sends 16). */
export const EMITTER = new RegExp(contract.envelope.emitter.pattern);
/**
 * Latest `ts` accepted, 9999-12-31T23:59:59Z: the last instant PostgreSQL's timestamptz and
 * JS dates share.
 */
export const MAX_TS: number = contract.envelope.ts.maximum;

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
      ? contract.types.text.default
      : typeof value === "string" && value.length <= MAX_TEXT
      ? value
      : UNDECIDED,
  nonNegative: (value) =>
    value === undefined
      ? contract.types.nonNegative.default
      : typeof value === "number" && value >= 0 && value <= Number.MAX_VALUE
      ? value
      : UNDECIDED,
  count: (value) =>
    value === undefined
      ? contract.types.count.default
      : Number.isSafeInteger(value) && (value as number) >= 0
      ? value
      : UNDECIDED,
  flag: (value) =>
    value === undefined
      ? contract.types.flag.default
      : typeof value === "boolean"
      ? value
      : UNDECIDED,
  positiveCount: (value) =>
    Number.isSafeInteger(value) && (value as number) >= MIN_HEIGHT ? value : UNDECIDED,
  blockHash: (value) => typeof value === "string" && BLOCK_HASH.test(value) ? value : UNDECIDED,
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

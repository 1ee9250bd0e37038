/**
 * Property-based fuzzing of the datagram path with fast-check: random bytes, valid events of
 * every type and mutations of them (fields dropped or replaced, wrong types, strings over the
 * limit, deep nesting, 1e400, -0, negative numbers, NaN and Infinity tokens, NUL and lone
 * surrogates, `__proto__` keys, cut and corrupted bytes, huge payloads, non-object JSON).
 *
 * What must hold: decoding never throws; an accepted event is one every sink can store as it
 * is; the centre counts every datagram as accepted or under exactly one reject reason; and
 * accepted events reach PostgreSQL and Redis unchanged, none refused by the database.
 *
 * The seed is fixed, so a failure reproduces; `FUZZ_SEED=n` tries another seed and
 * `FUZZ_SCALE=k` runs k times as many cases.
 *
 * @module
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import postgres from "postgres";
import { Collector } from "../src/collector.ts";
import { decodeDatagram, REJECT_REASONS, type RejectReason } from "../src/datagram.ts";
import {
  BLOCK_HASH,
  dataSchemas,
  EMITTER,
  EVENT_FIELDS,
  EVENT_NAME,
  EVENT_SOURCES,
  type FieldKind,
  isKnownEventType,
  KNOWN_EVENT_TYPES,
  type KnownEventType,
  MAX_DATA_DEPTH,
  MAX_TEXT,
  MAX_TS,
  type MiningEvent,
  parseEvent,
  parseEventWithSchemas,
} from "../src/events.ts";
import { createPostgresSink } from "../src/sinks/postgres/sink.ts";
import { createRedisSink } from "../src/sinks/redis/sink.ts";
import { RequestBuilder, streamKey } from "../src/sinks/redis/request.ts";
import { PlainEventScanner } from "../src/plain_event.ts";
import { RespConnection } from "../src/sinks/redis/resp.ts";
import { recordsOf } from "./support/spool_records.ts";
import { loadSchema, startPostgres, startRedis } from "./support/services.ts";
import { pushEvents } from "./support/sink_push.ts";

const SEED = Number(Deno.env.get("FUZZ_SEED") ?? 20260222);
const SCALE = Number(Deno.env.get("FUZZ_SCALE") ?? 1);

/** Runs a property with the file's seed; the error names the seed that reproduces it. */
function check<Ts extends [unknown, ...unknown[]]>(
  property: fc.IProperty<Ts>,
  numRuns: number,
): void {
  try {
    fc.assert(property, { seed: SEED, numRuns: Math.ceil(numRuns * SCALE) });
  } catch (error) {
    throw new Error(
      `fuzz failure, seed ${SEED} (rerun: FUZZ_SEED=${SEED} deno test -A tests/fuzz_test.ts)\n` +
        (error as Error).message,
      { cause: error },
    );
  }
}

// --- the contract -------------------------------------------------------------------------

/** The receive slot: a longer datagram reaches the centre cut and flagged. */
const MAX_DATAGRAM_BYTES = 16 * 1024;

type Kind = "text" | "number" | "count" | "bool" | "height" | "hash";
const KIND: Record<FieldKind, Kind> = {
  text: "text",
  nonNegative: "number",
  count: "count",
  flag: "bool",
  positiveCount: "height",
  blockHash: "hash",
};
/** Kinds a valid payload must carry. */
const REQUIRED_KINDS: ReadonlySet<Kind> = new Set(["height", "hash"]);
const CONTRACT = Object.fromEntries(
  Object.entries(EVENT_FIELDS).map(([type, fields]) => [
    type,
    Object.fromEntries(Object.entries(fields).map(([name, kind]) => [name, KIND[kind]])),
  ]),
) as Record<KnownEventType, Record<string, Kind>>;

// --- JSON as a tree, so the text can hold what JSON.stringify never writes -----------------

/** JSON text used as is: NaN, 1e400, deep nesting, broken escapes. */
class Raw {
  constructor(readonly text: string) {}
}

/** An object as its entries, so `__proto__` and repeated keys reach the text. */
class Obj {
  constructor(readonly entries: readonly (readonly [string, Json])[]) {}
}

type Json = null | boolean | number | string | Raw | Obj | readonly Json[];

function toText(value: Json): string {
  if (value instanceof Raw) return value.text;
  if (value instanceof Obj) {
    return `{${value.entries.map(([k, v]) => `${JSON.stringify(k)}:${toText(v)}`).join(",")}}`;
  }
  if (Array.isArray(value)) return `[${value.map(toText).join(",")}]`;
  if (typeof value === "number") {
    if (Number.isNaN(value)) return "NaN";
    if (!Number.isFinite(value)) return value > 0 ? "1e400" : "-1e400";
    if (Object.is(value, -0)) return "-0";
  }
  // JSON.stringify escapes NUL as \u0000 and a lone surrogate as \udXXX, as an emitter would.
  return JSON.stringify(value);
}

const encoder = new TextEncoder();
const bytesOf = (value: Json) => encoder.encode(toText(value));

// --- arbitraries ---------------------------------------------------------------------------

const codePoint = (min: number, max: number) =>
  fc.integer({ min, max }).map((c) => String.fromCodePoint(c));

/** Characters PostgreSQL text and every sink can hold. */
const safeUnit = fc.oneof(
  { weight: 6, arbitrary: codePoint(0x20, 0x7e) },
  { weight: 1, arbitrary: codePoint(0x01, 0x1f) },
  { weight: 2, arbitrary: codePoint(0x80, 0xd7ff) },
  { weight: 2, arbitrary: codePoint(0xe000, 0x10ffff) },
  { weight: 1, arbitrary: fc.constantFrom('"', "\\", "\u2028", "\ufeff", "\u{1f600}") },
);
const hostileUnit = fc.oneof(
  { weight: 4, arbitrary: safeUnit },
  { weight: 1, arbitrary: fc.constantFrom("\0", "\ud800", "\udbff", "\udc00", "\udfff") },
  { weight: 1, arbitrary: codePoint(0xd800, 0xdfff) },
);

const safeText = fc.oneof(
  { weight: 5, arbitrary: fc.string({ unit: safeUnit, maxLength: 24 }) },
  {
    weight: 1,
    arbitrary: fc.constantFrom(
      "",
      "\\u0000", // the six characters, not NUL
      "x".repeat(MAX_TEXT),
      "é".repeat(MAX_TEXT),
      "\u{1f600}".repeat(MAX_TEXT),
      "__proto__",
    ),
  },
);
const hostileText = fc.oneof(
  { weight: 3, arbitrary: safeText },
  { weight: 3, arbitrary: fc.string({ unit: hostileUnit, maxLength: 24 }) },
  {
    weight: 1,
    arbitrary: fc.constantFrom(
      "\0",
      "user\0",
      "\ud800",
      "x\udc00y",
      "\udc00\ud800",
      "x".repeat(MAX_TEXT + 1),
      "\u{1f600}".repeat(MAX_TEXT + 1),
      "x".repeat(20_000),
    ),
  },
);

const safeKey = safeText.filter((key) => key !== "__proto__");
const hostileKey = fc.oneof(
  { weight: 4, arbitrary: hostileText },
  { weight: 1, arbitrary: fc.constantFrom("__proto__", "constructor", "prototype", "", "user") },
);

const validNumber = fc.oneof(
  fc.double({ min: 0, max: Number.MAX_VALUE, noNaN: true }),
  fc.constantFrom(0, -0, Number.MIN_VALUE, Number.MAX_VALUE, 0.1, 1e21, 2 ** 53 + 2),
);
const validCount = fc.oneof(
  fc.nat(),
  fc.maxSafeNat(),
  fc.constantFrom(0, Number.MAX_SAFE_INTEGER),
);
const finiteNumber = fc.double({ noNaN: true, noDefaultInfinity: true });
const hostileNumber = fc.oneof(
  validNumber,
  fc.double(),
  fc.constantFrom(-1, -Number.MIN_VALUE, -Number.MAX_VALUE, 2 ** 53, 1.5, Infinity, -Infinity, NaN),
);

function deepText(levels: number, kind: "array" | "object" | "mixed"): string {
  if (kind === "array") return "[".repeat(levels) + "]".repeat(levels);
  if (kind === "object") return '{"a":'.repeat(levels) + "0" + "}".repeat(levels);
  const pairs = Math.ceil(levels / 2);
  return '{"k":['.repeat(pairs) + "]}".repeat(pairs);
}

/** Deep nesting, around the limit and far past it (10,000 levels). */
const deep = fc
  .tuple(
    fc.oneof(
      fc.integer({ min: 1, max: MAX_DATA_DEPTH + 4 }),
      fc.constantFrom(MAX_DATA_DEPTH - 1, MAX_DATA_DEPTH, 64, 1000, 5000, 8000, 10_000),
    ),
    fc.constantFrom("array" as const, "object" as const, "mixed" as const),
  )
  .map(([levels, kind]) => new Raw(deepText(levels, kind)));

/** Tokens JSON.stringify never writes: some are not JSON, some parse to surprising values. */
const rawToken = fc
  .constantFrom(
    "NaN",
    "Infinity",
    "-Infinity",
    "1e400",
    "-1e400",
    "1" + "0".repeat(400),
    "123456789012345678901234567890",
    "-0",
    "-0.0",
    "0x10",
    "01",
    "1.",
    "+1",
    ".5",
    "1e",
    "tru",
    "undefined",
    "'x'",
    '"\\x41"',
    '"\\u12"',
    '"\\ud800"',
    '"\\udc00\\ud800"',
    '"\\u0000"',
    '"\\\\u0000"',
    '"\\uD83D\\uDE00"',
    '"\t"',
  )
  .map((text) => new Raw(text));

const hugeObject = fc
  .integer({ min: 100, max: 3000 })
  .map((n) => new Obj(Array.from({ length: n }, (_, i) => [`k${i}`, i] as const)));

function jsonArb(
  text: fc.Arbitrary<string>,
  number: fc.Arbitrary<number>,
  key: fc.Arbitrary<string>,
  extra: fc.Arbitrary<Json>[] = [],
): fc.Arbitrary<Json> {
  const { value } = fc.letrec<{ value: Json; object: Obj }>((tie) => ({
    value: fc.oneof(
      { maxDepth: 4, depthSize: "small" },
      fc.constant(null),
      fc.boolean(),
      number,
      text,
      ...extra,
      fc.array(tie("value"), { maxLength: 4 }),
      tie("object"),
    ),
    object: fc
      .array(fc.tuple(key, tie("value")), { maxLength: 5 })
      .map((entries) => new Obj(entries)),
  }));
  return value;
}

/** JSON every sink can hold as it is. */
const safeJson = jsonArb(safeText, finiteNumber, safeKey);
/** JSON no sink could store as it is (1e400 stands for Infinity). */
const ignoredJson = jsonArb(hostileText, hostileNumber.filter((n) => !Number.isNaN(n)), hostileKey);
/** Anything, including what is not JSON at all. */
const hostileJson = jsonArb(hostileText, hostileNumber, hostileKey, [
  rawToken,
  deep,
  hugeObject,
]);

const fieldValue: Record<Kind, fc.Arbitrary<Json>> = {
  text: safeText,
  number: validNumber,
  count: validCount,
  bool: fc.boolean(),
  height: fc.oneof(fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }), fc.constant(1)),
  hash: fc.stringMatching(BLOCK_HASH),
};

/**
 * A known type's payload: its required fields and any subset of the others, valid, plus fields
 * it does not know.
 */
function knownData(type: KnownEventType): fc.Arbitrary<Obj> {
  const fields = CONTRACT[type];
  const extraKey = safeKey.filter((key) => !Object.hasOwn(fields, key));
  const requiredKeys = Object.keys(fields).filter((name) => REQUIRED_KINDS.has(fields[name]));
  return fc
    .tuple(
      fc.record(
        Object.fromEntries(Object.entries(fields).map(([name, kind]) => [name, fieldValue[kind]])),
        { requiredKeys },
      ),
      fc.array(fc.tuple(extraKey, safeJson), { maxLength: 3 }),
    )
    .map(([known, extra]) => new Obj([...Object.entries(known) as [string, Json][], ...extra]));
}

const unknownType = fc
  .stringMatching(EVENT_NAME)
  .filter((name) => !Object.hasOwn(CONTRACT, name));

/** An event the contract accepts, of a known type or not. */
const validEvent: fc.Arbitrary<Obj> = fc
  .tuple(
    fc.oneof(
      fc.constantFrom(...KNOWN_EVENT_TYPES).chain((type) =>
        knownData(type).map((data) => [type, data] as const)
      ),
      fc.tuple(unknownType, fc.array(fc.tuple(safeKey, safeJson), { maxLength: 5 })).map((
        [type, entries],
      ) => [type, new Obj(entries)] as const),
    ),
    fc.oneof(
      fc.double({ min: Number.MIN_VALUE, max: MAX_TS, noNaN: true }),
      fc.constantFrom(Number.MIN_VALUE, 1, 1708617600.123456, MAX_TS),
    ),
    fc.constantFrom(...EVENT_SOURCES),
    fc.option(validCount, { nil: undefined }),
    fc.option(fc.stringMatching(EMITTER), { nil: undefined }),
    fc.boolean(),
    // Envelope fields the contract does not know are ignored, whatever JSON they hold.
    fc.array(fc.tuple(fc.constantFrom("note", "version", "host"), ignoredJson), { maxLength: 1 }),
  )
  .map(([[type, data], ts, source, seq, emitter, withData, extra]) => {
    const entries: [string, Json][] = [["event", type], ["ts", ts], ["source", source]];
    if (seq !== undefined) entries.push(["seq", seq]);
    if (emitter !== undefined) entries.push(["emitter", emitter]);
    if (withData || data.entries.length > 0) entries.push(["data", data]);
    return new Obj([...entries, ...extra]);
  });

interface Mutation {
  readonly where: "envelope" | "data" | "top";
  readonly op: "drop" | "set" | "add";
  readonly at: number;
  readonly key: string;
  readonly value: Json;
}

const mutation: fc.Arbitrary<Mutation> = fc.record({
  where: fc.constantFrom("envelope" as const, "data" as const, "data" as const, "top" as const),
  op: fc.constantFrom("drop" as const, "set" as const, "set" as const, "add" as const),
  at: fc.nat(),
  key: hostileKey,
  value: hostileJson,
});

function mutateObj(obj: Obj, { op, at, key, value }: Mutation): Obj {
  const entries = [...obj.entries];
  const i = entries.length === 0 ? 0 : at % entries.length;
  if (op === "add" || entries.length === 0) entries.push([key, value]);
  else if (op === "drop") entries.splice(i, 1);
  else entries[i] = [entries[i][0], value];
  return new Obj(entries);
}

function mutate(event: Json, m: Mutation): Json {
  if (!(event instanceof Obj) || m.where === "top") {
    // Mostly keep the event; sometimes the whole datagram becomes another JSON value.
    return m.where === "top" && m.at % 4 === 0 ? m.value : event;
  }
  if (m.where === "envelope") return mutateObj(event, m);
  const i = event.entries.findIndex(([k]) => k === "data");
  const data = i >= 0 ? event.entries[i][1] : new Obj([]);
  if (!(data instanceof Obj)) return mutateObj(event, m);
  const entries = [...event.entries];
  const mutated: [string, Json] = ["data", mutateObj(data, m)];
  if (i >= 0) entries[i] = mutated;
  else entries.push(mutated);
  return new Obj(entries);
}

const mutatedEvent: fc.Arbitrary<Json> = fc
  .tuple(validEvent, fc.array(mutation, { minLength: 1, maxLength: 3 }))
  .map(([event, mutations]) => mutations.reduce<Json>(mutate, event));

interface ByteMutation {
  readonly op: "cut" | "set" | "insert" | "delete" | "bom";
  readonly at: number;
  readonly bytes: readonly number[];
}

const byteMutation: fc.Arbitrary<ByteMutation> = fc.record({
  op: fc.constantFrom(
    "cut" as const,
    "set" as const,
    "insert" as const,
    "delete" as const,
    "bom" as const,
  ),
  at: fc.nat(),
  bytes: fc.oneof(
    fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 1, maxLength: 3 }),
    fc.constantFrom(
      [0x00], // NUL byte
      [0xff],
      [0xc0, 0x80], // overlong NUL
      [0xed, 0xa0, 0x80], // a surrogate encoded in UTF-8
      [0xf4, 0x90, 0x80, 0x80], // past U+10FFFF
      [0xe2, 0x82], // a character cut short
      [0x22],
      [0x5c],
      [0x7d],
    ),
  ),
});

function mutateBytes(bytes: Uint8Array, { op, at, bytes: patch }: ByteMutation): Uint8Array {
  const list = [...bytes];
  const i = at % (list.length + 1);
  if (op === "cut") return bytes.slice(0, i);
  if (op === "bom") return Uint8Array.from([0xef, 0xbb, 0xbf, ...list]);
  if (op === "insert") list.splice(i, 0, ...patch);
  else if (op === "delete") list.splice(i, 1);
  else list.splice(i, patch.length, ...patch);
  return Uint8Array.from(list);
}

interface Datagram {
  readonly bytes: Uint8Array;
  /** Built from a valid event and left intact: must be accepted. */
  readonly valid: boolean;
}

const datagram: fc.Arbitrary<Datagram> = fc.oneof(
  {
    weight: 2,
    arbitrary: fc.uint8Array({ maxLength: 600 }).map((bytes) => ({ bytes, valid: false })),
  },
  {
    weight: 1,
    arbitrary: fc
      .string({ unit: hostileUnit, maxLength: 200 })
      .map((text) => ({ bytes: encoder.encode(text), valid: false })),
  },
  { weight: 3, arbitrary: validEvent.map((e) => ({ bytes: bytesOf(e), valid: true })) },
  { weight: 5, arbitrary: mutatedEvent.map((e) => ({ bytes: bytesOf(e), valid: false })) },
  {
    weight: 2,
    arbitrary: fc
      .tuple(
        fc.oneof(validEvent, mutatedEvent),
        fc.array(byteMutation, { minLength: 1, maxLength: 3 }),
      )
      .map(([event, mutations]) => ({
        bytes: mutations.reduce(mutateBytes, bytesOf(event)),
        valid: false,
      })),
  },
);

// --- what an accepted event must be --------------------------------------------------------

const decoder = new TextDecoder();

/** Why `data` could not be stored as it is, or undefined. Iterative: `data` may be deep. */
function payloadProblem(data: unknown): string | undefined {
  const stack: [unknown, string, number][] = [[data, "data", 1]];
  while (stack.length > 0) {
    const [value, path, depth] = stack.pop()!;
    if (typeof value === "number" && !Number.isFinite(value)) return `${path} is ${value}`;
    if (typeof value === "string" && (value.includes("\0") || !value.isWellFormed())) {
      return `${path} holds NUL or a lone surrogate`;
    }
    if (typeof value !== "object" || value === null) continue;
    if (depth > MAX_DATA_DEPTH) return `${path} is nested ${depth} levels deep`;
    const proto = Object.getPrototypeOf(value);
    if (proto !== Object.prototype && proto !== Array.prototype) {
      return `${path} has an unexpected prototype`;
    }
    for (const key of Object.keys(value)) {
      if (key.includes("\0") || !key.isWellFormed()) {
        return `${path} has a key with NUL or a lone surrogate`;
      }
      stack.push([(value as Record<string, unknown>)[key], `${path}.${key}`, depth + 1]);
    }
  }
  return undefined;
}

/** Asserts what the sinks rely on; `raw` is `JSON.parse` of the datagram. */
function checkEvent(event: MiningEvent, raw: Record<string, unknown>): void {
  assert.match(event.event, EVENT_NAME);
  assert.ok(Number.isFinite(event.ts) && event.ts > 0 && event.ts <= MAX_TS, `ts ${event.ts}`);
  assert.ok((EVENT_SOURCES as readonly string[]).includes(event.source));
  if (event.seq !== undefined) assert.ok(Number.isSafeInteger(event.seq) && event.seq >= 0);
  if (event.emitter !== undefined) assert.match(event.emitter, EMITTER);
  const problem = payloadProblem(event.data);
  assert.equal(problem, undefined, problem);

  // Every field sent is kept as sent: nothing the sinks would write differs from the datagram.
  const sent = (raw.data ?? {}) as Record<string, unknown>;
  for (const key of Object.keys(sent)) {
    assert.ok(Object.hasOwn(event.data, key), `data.${key} was sent but is missing`);
    assert.deepStrictEqual(event.data[key], sent[key], `data.${key} changed`);
  }

  if (!Object.hasOwn(CONTRACT, event.event)) return;
  for (const [name, kind] of Object.entries(CONTRACT[event.event as KnownEventType])) {
    const value = event.data[name];
    const what = `${event.event}.${name} = ${String(value).slice(0, 40)}`;
    switch (kind) {
      case "text":
        // Characters are code points: an emoji is one, not two UTF-16 units.
        assert.ok(typeof value === "string" && [...value].length <= MAX_TEXT, what);
        break;
      case "number":
        assert.ok(typeof value === "number" && Number.isFinite(value) && value >= 0, what);
        break;
      case "count":
        assert.ok(Number.isSafeInteger(value) && (value as number) >= 0, what);
        break;
      case "bool":
        assert.ok(typeof value === "boolean", what);
        break;
      case "height":
        assert.ok(Number.isSafeInteger(value) && (value as number) >= 1, what);
        break;
      case "hash":
        assert.ok(typeof value === "string" && BLOCK_HASH.test(value), what);
        break;
    }
  }
}

Deno.test("fuzz: the test's contract table matches the schemas", () => {
  for (const type of KNOWN_EVENT_TYPES) {
    assert.deepEqual(
      Object.keys(dataSchemas[type].shape).sort(),
      Object.keys(CONTRACT[type]).sort(),
      type,
    );
  }
});

Deno.test("fuzz: decoding never throws, and whatever it accepts every sink can store", () => {
  check(
    fc.property(datagram, ({ bytes, valid }) => {
      const result = decodeDatagram(bytes, false);
      if (!result.ok) {
        assert.ok(REJECT_REASONS.includes(result.reason), result.reason);
        assert.ok(typeof result.detail === "string" && result.detail.length > 0);
        assert.ok(!valid, `a valid event was refused (${result.reason}: ${result.detail})`);
        return;
      }
      checkEvent(result.event, JSON.parse(decoder.decode(bytes)));
    }),
    10_000,
  );
});

Deno.test("fuzz: the fast path decides exactly as the schemas do, key order included", () => {
  const cases = fc.oneof(
    datagram.map(({ bytes }) => bytes),
    // Values near each fast check's edges, inside a valid share.
    fc.record({
      field: fc.constantFrom("user", "client_id", "diff", "accepted", "extra"),
      value: fc.oneof(
        fc.constantFrom(null, true, "", -0, 0, -1, 1.5, 2 ** 53, 2 ** 53 - 1, 1e308, [], {}),
        fc.string({ minLength: 1020, maxLength: 1030 }),
        fc.double(),
      ),
    }).map(({ field, value }) =>
      encoder.encode(JSON.stringify({
        event: "share_submitted",
        ts: 1_767_225_600.5,
        source: "hosted",
        seq: 1,
        emitter: "ab",
        data: { user: "u", [field]: value },
      }))
    ),
  );
  check(
    fc.property(cases, (bytes) => {
      let value: unknown;
      try {
        value = JSON.parse(decoder.decode(bytes));
      } catch {
        return;
      }
      const fast = parseEvent(value, bytes);
      const reference = parseEventWithSchemas(value, bytes);
      assert.equal(fast.ok, reference.ok);
      // JSON text compares values and key order; deepEqual tells -0 from 0.
      if (fast.ok && reference.ok) {
        assert.equal(JSON.stringify(fast.event), JSON.stringify(reference.event));
        assert.deepEqual(fast.event, reference.event);
      } else {
        assert.deepEqual(fast, reference);
      }
    }),
    10_000,
  );
});

/** JSON number tokens at the edges of what the byte path writes as sent, and not JSON ones. */
const numberToken = fc.constantFrom(
  "0",
  "-0",
  "7",
  "1024",
  "1024.0",
  "1024.50",
  "1e3",
  "1E+2",
  "2.5e-3",
  "0.000001",
  "1e-7",
  "123456789012345",
  "1234567890123456",
  "9007199254740993",
  "1.5",
  "-1",
  "1e400",
  "00",
  "1.",
  ".5",
  "-",
  "253402300799",
  "253402300799.5",
  "1765000000.123456",
  "12345678901234567890",
);
/** A JSON value as raw text: mostly what the patched ckpool sends, sometimes what it never does. */
const rawValue = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.string({ unit: "grapheme-ascii", maxLength: 40 }).map((t) => JSON.stringify(t)),
  },
  { weight: 4, arbitrary: numberToken },
  { weight: 2, arbitrary: fc.constantFrom("true", "false") },
  {
    weight: 1,
    arbitrary: fc.constantFrom(
      "null",
      "{}",
      "[]",
      '"a\\u00e9"',
      '"\\n"',
      '"é"',
      '"x"',
      JSON.stringify("y".repeat(1025)),
      JSON.stringify("00".repeat(32)),
      '"' + "a".repeat(1024) + '"',
    ),
  },
);
const rawKey = fc.oneof(
  {
    weight: 2,
    arbitrary: fc.constantFrom(...new Set(Object.values(EVENT_FIELDS).flatMap(Object.keys))),
  },
  {
    weight: 1,
    arbitrary: fc.constantFrom("extra", "note", "1", "9x", "__proto__", "", "é", "a b"),
  },
);
/** A raw value that fits a field of each kind, mostly. */
const fittingValue: Record<FieldKind, fc.Arbitrary<string>> = {
  text: fc.oneof(
    { weight: 9, arbitrary: fc.string({ unit: "grapheme-ascii", maxLength: 40 }) },
    { weight: 1, arbitrary: fc.constantFrom("a".repeat(1024), "a".repeat(1025)) },
  ).map((t) => JSON.stringify(t)),
  nonNegative: fc.oneof(
    fc.constantFrom("0", "1024.0", "1e3", "2.5e-3", "0.000001", "1e-7", "1765000000.123456"),
    // At the edges: the sign, and where digits stop being exact.
    fc.constantFrom("-0", "-1", "-0.0", "9007199254740993", "12345678901234567", "1e400"),
    // Fractions around the rule for writing a number as sent: 15 significant digits, no
    // trailing zero, at most five zeros after the point.
    fc.constantFrom("0.0000012", "0.00000012", "0.000001", "1.10", "100.5", "0.3"),
    fc.constantFrom("12345678.1234567", "12345678.12345678", "1.2345678901234567"),
    fc.constantFrom("0.123456789012345", "0.1234567890123456789", "0.00000123456789012345"),
    fc.constantFrom("1234567890.12345", "1234567890.123456", "0.30000000000000004"),
    fc.constantFrom("0.10000000000000001", "1234567890.12345678901", "100.00000000000000001"),
    fc.double({ min: 0, max: 1e12, noNaN: true }).map(String),
  ),
  count: fc.oneof(
    fc.constantFrom("0", "7.0", "1e2", "123456789012345", "9007199254740993", "-0", "1.5"),
    fc.nat().map(String),
  ),
  flag: fc.constantFrom("true", "false"),
  positiveCount: fc.constantFrom("812345", "1", "1.0"),
  blockHash: fc.constantFrom(JSON.stringify("0a".repeat(32)), JSON.stringify("0A".repeat(32))),
};
const datagramType = fc.constantFrom(...KNOWN_EVENT_TYPES, "pool_started", "Share");
/** A payload for `type`: each field missing, fitting or anything, and sometimes other keys. */
function rawPayload(type: string): fc.Arbitrary<[string, string][]> {
  const fields = isKnownEventType(type) ? Object.entries(EVENT_FIELDS[type]) : [];
  return fc
    .tuple(
      fc.tuple(
        ...fields.map(([name, kind]) =>
          fc.oneof(
            { weight: 2, arbitrary: fc.constant(null) },
            { weight: 30, arbitrary: fittingValue[kind].map((value) => [name, value]) },
            { weight: 1, arbitrary: rawValue.map((value) => [name, value]) },
          )
        ),
      ),
      fc.oneof(
        { weight: 1, arbitrary: fc.constant([]) },
        { weight: 1, arbitrary: fc.array(fc.tuple(rawKey, rawValue), { maxLength: 2 }) },
      ),
      fc.boolean(),
    )
    .map(([known, others, shuffle]) => {
      const members = [...known.filter((m) => m !== null) as [string, string][], ...others];
      return shuffle ? members.reverse() : members;
    });
}
/** Null seven times in eight, else a value of `arbitrary`. */
function seldom<T>(arbitrary: fc.Arbitrary<T>): fc.Arbitrary<T | null> {
  return fc.oneof({ weight: 7, arbitrary: fc.constant(null) }, { weight: 1, arbitrary });
}
/** True about one time in ten. */
const rarely = fc.oneof({ weight: 9, arbitrary: fc.constant(false) }, {
  weight: 1,
  arbitrary: fc.constant(true),
});
/** Datagrams built as text, so that every token is exactly as chosen: most are plain, many nearly. */
const nearlyPlain: fc.Arbitrary<Uint8Array> = datagramType
  .chain((event) =>
    fc.record({
      event: fc.constant(event),
      ts: fc.oneof({ weight: 1, arbitrary: numberToken }, {
        weight: 4,
        arbitrary: fc.constant("1765000000.123456"),
      }),
      source: fc.constantFrom("hosted", "hosted", "proxy", "self-hosted", "elsewhere"),
      seq: fc.option(fc.oneof(numberToken, fc.nat().map(String)), { freq: 8 }),
      emitter: fc.option(
        fc.oneof(
          { weight: 8, arbitrary: fc.constant('"0123456789abcdef"') },
          {
            weight: 1,
            arbitrary: fc.constantFrom('"ABC"', '"' + "f".repeat(33) + '"', "7", '""'),
          },
        ),
        { freq: 8 },
      ),
      data: fc.option(rawPayload(event), { freq: 8 }),
      extraTop: seldom(fc.constantFrom('"other":1', '"event":"share_submitted"', '"data":{}')),
      space: seldom(fc.nat(400)),
    })
  )
  .map(({ event, ts, source, seq, emitter, data, extraTop, space }) => {
    const members = [`"event":"${event}"`, `"ts":${ts}`, `"source":"${source}"`];
    if (seq !== null) members.push(`"seq":${seq}`);
    if (emitter !== null) members.push(`"emitter":${emitter}`);
    if (data !== null) {
      members.push(
        `"data":{${data.map(([key, value]) => `${JSON.stringify(key)}:${value}`).join(",")}}`,
      );
    }
    if (extraTop !== null) members.push(extraTop);
    let text = `{${members.join(",")}}`;
    if (space !== null) {
      text = text.slice(0, space % text.length) + " " + text.slice(space % text.length);
    }
    return encoder.encode(text);
  });

Deno.test("fuzz: the Redis sink writes a datagram from its bytes exactly as from its decode", () => {
  const scanner = new PlainEventScanner();
  const fromBytes = new RequestBuilder(1_000);
  const fromDecode = new RequestBuilder(1_000);
  let plain = 0;
  let runs = 0;
  check(
    fc.property(fc.oneof(datagram.map((d) => d.bytes), nearlyPlain), rarely, (
      bytes,
      truncated,
    ) => {
      runs++;
      if (!truncated && scanner.scan(bytes)) plain++;
      fromBytes.clear();
      fromDecode.clear();
      const written = fromBytes.addDatagram(bytes, truncated, 0);
      const decoded = decodeDatagram(bytes, truncated);
      if (decoded.ok) fromDecode.add(decoded.event, 0);
      assert.equal(written, decoded.ok);
      assert.deepEqual(fromBytes.bytes(), fromDecode.bytes());
      assert.equal(fromBytes.commands, fromDecode.commands);
    }),
    10_000,
  );
  // Without plain datagrams among the cases, the property would only test the decode path.
});

Deno.test("fuzz: the centre counts every datagram once, as accepted or under one reason", () => {
  check(
    fc.property(fc.array(datagram, { maxLength: 40 }), fc.nat(), (datagrams, split) => {
      const handed: MiningEvent[] = [];
      const collector = new Collector();
      const expected = Object.fromEntries(REJECT_REASONS.map((r) => [r, 0])) as Record<
        RejectReason,
        number
      >;
      let accepted = 0;
      // As the receive thread hands datagrams over: cut to the slot and flagged, in batches
      // (two here, split anywhere) queued for the centre.
      const slots = datagrams.map(({ bytes }) => ({
        bytes: bytes.subarray(0, MAX_DATAGRAM_BYTES),
        truncated: bytes.length > MAX_DATAGRAM_BYTES,
      }));
      for (const { bytes, truncated } of slots) {
        const result = decodeDatagram(bytes, truncated);
        if (result.ok) accepted++;
        else expected[result.reason]++;
      }
      const cut = split % (slots.length + 1);
      handed.push(...collector.ingest(recordsOf(slots.slice(0, cut))));
      handed.push(...collector.ingest(recordsOf(slots.slice(cut), cut)));
      const counters = collector.counters();
      const invalid = Object.values(counters.invalid).reduce((sum, n) => sum + n, 0);
      assert.equal(counters.received, datagrams.length);
      assert.equal(counters.accepted + invalid, counters.received);
      assert.equal(counters.accepted, accepted);
      assert.equal(handed.length, accepted);
      assert.deepEqual(counters.invalid, { ...counters.invalid, ...expected });
    }),
    1000,
  );
});

// --- accepted events through the real sinks ------------------------------------------------

/**
 * A few thousand accepted events: valid ones and mutations the validator let through. Each
 * event once: storage keeps one row per event id, and this is about what the rows hold.
 */
function acceptedEvents(count: number): MiningEvent[] {
  const samples = fc.sample(fc.oneof(validEvent, mutatedEvent), {
    seed: SEED,
    numRuns: Math.ceil(count * 3 * SCALE),
  });
  const events: MiningEvent[] = [];
  const ids = new Set<string>();
  for (const sample of samples) {
    const bytes = bytesOf(sample);
    if (bytes.length > MAX_DATAGRAM_BYTES) continue;
    const result = decodeDatagram(bytes, false);
    if (!result.ok) continue;
    const id = (result.event as { id?: string }).id;
    if (id !== undefined && ids.has(id)) continue;
    if (id !== undefined) ids.add(id);
    events.push(result.event);
    if (events.length >= count * SCALE) break;
  }
  return events;
}

const SINK_EVENTS = 3000;

/** `data` as JSON gives it back: -0 becomes 0, nothing else changes for a valid payload. */
const viaJson = (data: unknown) => JSON.parse(JSON.stringify(data));

function chunks<T>(list: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < list.length; i += size) out.push(list.slice(i, i + size));
  return out;
}

Deno.test("fuzz: PostgreSQL stores every accepted event as it is and refuses none", async () => {
  const events = acceptedEvents(SINK_EVENTS);
  assert.ok(events.length >= SINK_EVENTS * 0.9, `only ${events.length} accepted`);
  for (const event of events) checkEvent(event, { data: event.data });
  const service = await startPostgres();
  let sql: postgres.Sql | undefined;
  try {
    await loadSchema(service);
    const options = {
      url: service.url,
      batchMaxSize: 500,
      flushIntervalMs: 20,
    };
    const sink = createPostgresSink(options);
    for (const chunk of chunks(events, 250)) pushEvents(sink, chunk);
    await sink.flush(AbortSignal.timeout(60_000));
    const stats = sink.stats();
    await sink.close();
    assert.equal(stats.dropped, 0, "the database refused events the validator accepted");
    assert.equal(stats.pending, 0);
    assert.equal(stats.written, events.length);

    sql = postgres(service.url, { max: 1, onnotice: () => {} });

    const rows = await sql<
      {
        ts: string;
        event_type: string;
        source: string;
        emitter: string | null;
        seq: string | null;
        payload: string;
        id: string | null;
      }[]
    >`SELECT extract(epoch FROM ts)::text AS ts, event_type, source, emitter, seq::text AS seq,
        payload::text AS payload, to_jsonb(m) ->> 'event_id' AS id
      FROM mining_events m ORDER BY ctid`;
    assert.equal(rows.length, events.length);
    // A row names its event by id where the schema stores one; otherwise rows are in push order.
    const byId = new Map(events.map((event) => [(event as { id?: string }).id, event]));
    const matched = new Set<MiningEvent>();
    rows.forEach((row, i) => {
      const event = row.id === null ? events[i] : byId.get(row.id);
      assert.ok(event !== undefined && !matched.has(event), `row ${i}: id ${row.id}`);
      matched.add(event);
      const where = `row ${i} (${event.event})`;
      assert.equal(row.event_type, event.event, where);
      assert.equal(row.source, event.source, where);
      assert.equal(row.emitter, event.emitter ?? null, where);
      assert.equal(row.seq, event.seq === undefined ? null : String(event.seq), where);
      // Microseconds, computed in float8 as PostgreSQL's to_timestamp does: near year 9999
      // the product by 1e6 is off by up to half an ulp, about 30 µs.
      const tolerance = 1e-6 + event.ts * Number.EPSILON;
      assert.ok(Math.abs(Number(row.ts) - event.ts) <= tolerance, `${where}: ts ${row.ts}`);
      assert.deepStrictEqual(JSON.parse(row.payload), viaJson(event.data), where);
    });
    const [{ shares }] = await sql<
      { shares: number }[]
    >`SELECT count(*)::int AS shares FROM shares`;
    assert.equal(shares, events.filter((e) => e.event === "share_submitted").length);
  } finally {
    await sql?.end();
    await service.stop();
  }
});

Deno.test("fuzz: every accepted event's Redis entry gives its data back", async () => {
  const events = acceptedEvents(SINK_EVENTS);
  const service = await startRedis();
  let client: RespConnection | undefined;
  try {
    const options = { url: service.url, streamMaxLen: 10_000_000 };
    const sink = createRedisSink(options);
    for (const chunk of chunks(events, 250)) pushEvents(sink, chunk);
    await sink.flush(AbortSignal.timeout(60_000));
    const stats = sink.stats();
    await sink.close();
    assert.equal(stats.dropped, 0);
    assert.equal(stats.pending, 0);
    assert.equal(stats.written, events.length);

    const byStream = Map.groupBy(events, (event) => streamKey(event.event));
    client = await RespConnection.connect(service.url);
    const keys = [...byStream.keys()];
    const replies = await client.pipeline(keys.map((key) => ["XRANGE", key, "-", "+"]));
    keys.forEach((key, k) => {
      const entries = replies[k] as [string, string[]][];
      const sent = byStream.get(key)!;
      assert.equal(entries.length, sent.length, key);
      entries.forEach(([, flat], i) => {
        const fields = Object.fromEntries(chunks(flat, 2));
        const event = sent[i];
        const where = `${key} entry ${i}`;
        assert.equal(fields.event, event.event, where);
        assert.equal(fields.source, event.source, where);
        assert.equal(Number(fields.ts), event.ts, where);
        assert.deepStrictEqual(JSON.parse(fields.data), viaJson(event.data), where);
      });
    });
  } finally {
    client?.close();
    await service.stop();
  }
});

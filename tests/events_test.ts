import assert from "node:assert/strict";
import { isKnownEventType, KNOWN_EVENT_TYPES, parseEvent } from "../src/events.ts";

const envelope = { ts: 1708617600.123456, source: "hosted", seq: 4711 };

/** A complete payload for every known type. */
const full: Record<string, Record<string, unknown>> = {
  share_submitted: {
    user: "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx",
    worker: "bitaxe-01",
    client_id: 7,
    diff: 1,
    sdiff: 2.5,
    accepted: false,
    reject_reason: "Above target",
    ip: "10.0.0.2",
    is_block: false,
  },
  block_found: {
    user: "tb1q",
    worker: "w",
    height: 200123,
    hash: "0000000000000000000213d4a1a3cb6f6a4cf5d1e0e9d7a9a8c95c2c31b2d4e1",
    diff: 1.5e6,
    network_diff: 1.2e6,
    reward_sats: 312500000,
    coinbase_sig: "/TBG/",
  },
  miner_connected: {
    user: "tb1q",
    worker: "w",
    client_id: 1,
    ip: "::1",
    useragent: "cgminer/4.12",
    initial_diff: 1,
  },
  miner_disconnected: {
    user: "tb1q",
    worker: "w",
    client_id: 1,
    ip: "::1",
    session_duration: 360.5,
    shares_session: 42,
    rejects_session: 3,
  },
  diff_updated: { user: "tb1q", worker: "w", client_id: 1, old_diff: 1, new_diff: 2 },
  hashrate_update: {
    user: "tb1q",
    worker: "w",
    hashrate_1m: 1e12,
    hashrate_5m: 9e11,
    hashrate_1h: 8e11,
    hashrate_1d: 7e11,
  },
  new_block_network: { height: 200124, hash: "00cd", diff: 1.2e6, prev_hash: "00ab" },
  share_best_diff: { user: "tb1q", worker: "w", new_best: 1000, prev_best: 10, timeframe: "all" },
};

/** The fields a type cannot do without. */
const required: Record<string, Record<string, unknown>> = {
  block_found: { height: 1, hash: "ab".repeat(32) },
};

/** A field of the wrong type, per known type. */
const wrong: Record<string, Record<string, unknown>> = {
  share_submitted: { accepted: "yes" },
  block_found: { height: 1.5 },
  miner_connected: { ip: 12 },
  miner_disconnected: { session_duration: -1 },
  diff_updated: { new_diff: "2" },
  hashrate_update: { hashrate_1m: null },
  new_block_network: { hash: ["00"] },
  share_best_diff: { new_best: {} },
};

Deno.test("the contract knows eight types", () => {
  assert.deepEqual([...KNOWN_EVENT_TYPES].sort(), Object.keys(full).sort());
});

for (const type of KNOWN_EVENT_TYPES) {
  Deno.test(`${type}: a full payload passes unchanged`, () => {
    const result = parseEvent({ event: type, ...envelope, data: full[type] });
    assert.ok(result.ok);
    assert.deepEqual(result.event.data, full[type]);
    assert.equal(result.event.seq, 4711);
  });

  Deno.test(`${type}: a partial payload gets every default`, () => {
    const given = required[type] ?? {};
    const result = parseEvent({ event: type, ...envelope, data: given });
    assert.ok(result.ok, !result.ok ? result.detail : "");
    assert.deepEqual(Object.keys(result.event.data).sort(), Object.keys(full[type]).sort());
    for (const [key, value] of Object.entries(result.event.data)) {
      if (Object.hasOwn(given, key)) continue;
      assert.ok(["", 0, false].includes(value as never), `${key} defaulted to ${value}`);
    }
  });

  Deno.test(`${type}: a wrong field type is refused`, () => {
    const result = parseEvent({
      event: type,
      ...envelope,
      data: { ...full[type], ...wrong[type] },
    });
    assert.ok(!result.ok);
    assert.equal(result.reason, "invalid_data");
    assert.ok(result.detail.includes(Object.keys(wrong[type])[0]), result.detail);
  });
}

Deno.test("a missing data object means an empty one", () => {
  const result = parseEvent({ event: "share_submitted", ...envelope });
  assert.ok(result.ok);
  assert.equal(result.event.data.accepted, false);
});

Deno.test("fields the contract does not know are kept", () => {
  const result = parseEvent({
    event: "share_submitted",
    ...envelope,
    data: { ...full.share_submitted, version_mask: "1fffe000" },
  });
  assert.ok(result.ok);
  assert.equal(result.event.data.version_mask, "1fffe000");
});

Deno.test("unknown types pass through with their data untouched", () => {
  const data = { anything: [1, { nested: true }], user: 5 };
  const result = parseEvent({ event: "pool_stats", ...envelope, data });
  assert.ok(result.ok);
  assert.equal(isKnownEventType("pool_stats"), false);
  assert.deepEqual(result.event.data, data);
});

Deno.test("seq and emitter are optional", () => {
  const result = parseEvent({ event: "diff_updated", ts: 1, source: "proxy", data: {} });
  assert.ok(result.ok);
  assert.equal(result.event.seq, undefined);
  assert.equal(result.event.emitter, undefined);
  const withEmitter = parseEvent({ ...{ event: "diff_updated", ...envelope }, emitter: "a1b2" });
  assert.ok(withEmitter.ok);
  assert.equal(withEmitter.event.emitter, "a1b2");
});

const badEnvelopes: Array<[string, unknown]> = [
  ["not an object", [1, 2]],
  ["null", null],
  ["no event", { ts: 1, source: "hosted" }],
  ["event with a key-unsafe name", { event: "share submitted", ts: 1, source: "hosted" }],
  ["event with a colon", { event: "a:b", ts: 1, source: "hosted" }],
  ["ts as a string", { event: "x", ts: "1", source: "hosted" }],
  ["negative ts", { event: "x", ts: -1, source: "hosted" }],
  ["ts past year 9999", { event: "x", ts: 253402300800, source: "hosted" }],
  ["unknown source", { event: "x", ts: 1, source: "cloud" }],
  ["fractional seq", { event: "x", ts: 1, source: "hosted", seq: 1.5 }],
  ["negative seq", { event: "x", ts: 1, source: "hosted", seq: -1 }],
  ["data as an array", { event: "x", ts: 1, source: "hosted", data: [] }],
  ["emitter not hex", { event: "x", ts: 1, source: "hosted", emitter: "zz" }],
];

for (const [name, value] of badEnvelopes) {
  Deno.test(`envelope refused: ${name}`, () => {
    const result = parseEvent(value);
    assert.ok(!result.ok);
    assert.equal(result.reason, "invalid_envelope");
  });
}

Deno.test("infinite numbers (1e999 in JSON) are refused", () => {
  const ts = parseEvent(JSON.parse('{"event":"x","ts":1e999,"source":"hosted"}'));
  assert.ok(!ts.ok);
  const diff = parseEvent(
    JSON.parse('{"event":"share_submitted","ts":1,"source":"hosted","data":{"diff":-1e999}}'),
  );
  assert.ok(!diff.ok);
  assert.equal(diff.reason, "invalid_data");
});

Deno.test("oversized strings are refused", () => {
  const result = parseEvent({
    event: "share_submitted",
    ...envelope,
    data: { worker: "x".repeat(5000) },
  });
  assert.ok(!result.ok);
});

// Found by tests/fuzz_test.ts: each was accepted, then stored other than sent (or not at all).
const unstorable: Array<[string, string, string]> = [
  // PostgreSQL text cannot hold NUL: the sink stripped it, crediting the share to "tb1q".
  ["NUL in a value", '"share_submitted","data":{"user":"tb1\\u0000q"}', "data.user holds NUL"],
  ["NUL in a key", '"pool_stats","data":{"a\\u0000b":1}', "the key holds NUL"],
  // PostgreSQL jsonb refuses lone surrogates: the sink wrote U+FFFD, Redis the escape.
  ["lone high surrogate", '"share_submitted","data":{"worker":"\\ud800x"}', "lone surrogate"],
  ["lone low surrogate", '"pool_stats","data":{"a":["\\udc00"]}', "data.a[0] holds a lone"],
  ["reversed pair", '"pool_stats","data":{"a":"\\udc00\\ud800"}', "lone surrogate"],
  // zod's copy turned the key into its prototype: the field vanished from every sink.
  ["__proto__ key", '"share_submitted","data":{"__proto__":{"is_block":true}}', "__proto__"],
  ["nested __proto__ key", '"pool_stats","data":{"a":{"__proto__":1}}', "data.a: a key named"],
  // 1e400 parses to Infinity, which JSON writes back as null.
  ["1e400 in an extra field", '"share_submitted","data":{"extra":1e400}', "data.extra: Infinity"],
  ["-1e400 in an unknown type", '"pool_stats","data":{"h":[-1e400]}', "-Infinity is not a"],
  ["33 levels", `"pool_stats","data":{"a":${"[".repeat(32)}${"]".repeat(32)}}`, "deeper than 32"],
];

for (const [name, body, detail] of unstorable) {
  Deno.test(`payload refused: ${name}`, () => {
    const result = parseEvent(JSON.parse(`{"ts":1,"source":"hosted","event":${body}}`));
    assert.ok(!result.ok);
    assert.equal(result.reason, "invalid_data");
    assert.ok(result.detail.includes(detail), result.detail);
  });
}

Deno.test("payloads every sink stores as sent are kept: pairs, escaped backslashes, 32 levels", () => {
  const data = JSON.parse(
    `{"w":"\\ud83d\\ude00","t":"\\\\u0000","n":-1.5,"proto":"__proto__",` +
      `"deep":${"[".repeat(31)}${"]".repeat(31)}}`,
  );
  const result = parseEvent({ event: "pool_stats", ...envelope, data });
  assert.ok(result.ok, result.ok ? "" : result.detail);
  assert.deepEqual(result.event.data, data);
});

Deno.test("the text limit counts characters (code points), not UTF-16 units", () => {
  const withWorker = (worker: string) =>
    parseEvent({ event: "share_submitted", ...envelope, data: { worker } });
  assert.ok(withWorker("\u{1f600}".repeat(1024)).ok);
  assert.ok(!withWorker("\u{1f600}".repeat(1025)).ok);
});

Deno.test("a block_found without a 64-hex-digit hash and a height above 0 is refused", () => {
  const good = full.block_found;
  const cases: [string, Record<string, unknown>, string][] = [
    ["nothing at all", {}, "height"],
    ["no hash", { ...good, hash: undefined }, "hash"],
    ["an empty hash", { ...good, hash: "" }, "hash"],
    ["a short hash", { ...good, hash: "ab".repeat(31) }, "hash"],
    ["a long hash", { ...good, hash: "ab".repeat(33) }, "hash"],
    ["a hash that is not hex", { ...good, hash: "zz".repeat(32) }, "hash"],
    ["no height", { ...good, height: undefined }, "height"],
    ["height 0", { ...good, height: 0 }, "height"],
    ["a negative height", { ...good, height: -5 }, "height"],
    ["a fractional height", { ...good, height: 2.5 }, "height"],
  ];
  for (const [what, data, field] of cases) {
    const result = parseEvent({ event: "block_found", ...envelope, data });
    assert.ok(!result.ok, `${what}: accepted`);
    assert.equal(result.reason, "invalid_data", what);
    assert.ok(result.detail.includes(field), `${what}: ${result.detail}`);
  }
  // The smallest real block: height 1, any case of hex.
  const upper = parseEvent({
    event: "block_found",
    ...envelope,
    data: { height: 1, hash: "AB".repeat(32) },
  });
  assert.ok(upper.ok);
  assert.equal(upper.event.data.hash, "AB".repeat(32));
});

import assert from "node:assert/strict";
import { MAX_TS, type MiningEvent, parseEvent } from "../../src/events.ts";
import {
  buildBatch,
  cleanText,
  copyJson,
  copyText,
  copyTimestamp,
  eventsCopy,
  isoWeekStart,
  isStorableTs,
  sharesCopy,
  storedId,
  toJson,
  withoutRepeats,
} from "../../src/sinks/postgres/batch.ts";
import { unchecked } from "../support/unchecked_event.ts";

/** A validated event, defaults applied, as the collector hands it to a sink. */
function ev(
  event: string,
  ts: number,
  data: Record<string, unknown> = {},
  extra: { seq?: number; emitter?: string; source?: string } = {},
): MiningEvent {
  const parsed = parseEvent({ event, ts, source: extra.source ?? "hosted", data, ...extra });
  if (!parsed.ok) throw new Error(`test event rejected: ${parsed.detail}`);
  return parsed.event;
}

const SUNDAY_LAST_SECOND = Date.UTC(2024, 1, 25, 23, 59, 59) / 1000; // 2024-02-25 Sun
const MONDAY_MIDNIGHT = Date.UTC(2024, 1, 26) / 1000; // 2024-02-26 Mon

Deno.test("isoWeekStart: Monday of the ISO week in UTC, across the Sunday→Monday boundary", () => {
  assert.equal(isoWeekStart(SUNDAY_LAST_SECOND), "2024-02-19");
  assert.equal(isoWeekStart(SUNDAY_LAST_SECOND + 0.999), "2024-02-19");
  assert.equal(isoWeekStart(MONDAY_MIDNIGHT), "2024-02-26");
  assert.equal(isoWeekStart(MONDAY_MIDNIGHT + 6 * 86_400 + 86_399), "2024-02-26");
  // Year boundary: Sunday 2021-01-03 belongs to the week that began Monday 2020-12-28.
  assert.equal(isoWeekStart(Date.UTC(2021, 0, 3, 12) / 1000), "2020-12-28");
  assert.equal(isoWeekStart(Date.UTC(2021, 0, 4) / 1000), "2021-01-04");
  // The epoch was a Thursday.
  assert.equal(isoWeekStart(0), "1969-12-29");
  assert.equal(isoWeekStart(MAX_TS), "9999-12-27");
});

Deno.test("isStorableTs: finite, non-negative, not beyond year 9999", () => {
  assert.equal(isStorableTs(1708617600.123456), true);
  assert.equal(isStorableTs(MAX_TS), true);
  assert.equal(isStorableTs(MAX_TS + 1), false);
  assert.equal(isStorableTs(1e20), false);
  assert.equal(isStorableTs(-1), false);
  assert.equal(isStorableTs(Number.NaN), false);
  assert.equal(isStorableTs(Number.POSITIVE_INFINITY), false);
});

Deno.test("cleanText: removes NUL, replaces lone surrogates, keeps everything else", () => {
  assert.equal(cleanText("a\0b\0"), "ab");
  assert.equal(cleanText("x\uD800y"), "x\uFFFDy");
  assert.equal(cleanText("x\uDC00"), "x\uFFFD");
  const kept = `q"uote' back\\slash ü 🚀 \u0001`;
  assert.equal(cleanText(kept), kept);
});

Deno.test("toJson: cleans strings and keys at any depth, leaves escaped text alone", () => {
  const value = {
    "k\0ey": ["a\0b", { nested: "lone \uDBFF end", pair: "🚀" }],
    literal: "\\u0000 is six characters here",
    quote: `"'\\`,
  };
  const parsed = JSON.parse(toJson(value));
  assert.deepEqual(parsed, {
    key: ["ab", { nested: "lone \uFFFD end", pair: "🚀" }],
    literal: "\\u0000 is six characters here",
    quote: `"'\\`,
  });
  assert.equal(toJson({ plain: "text" }), '{"plain":"text"}');

  // Deep nesting (a 64 KiB datagram can hold ~32k levels) costs no recursion here.
  let deep: unknown = "bottom\0";
  for (let i = 0; i < 30_000; i++) deep = [deep];
  const text = toJson(deep);
  assert.ok(text.endsWith(`"bottom"${"]".repeat(30_000)}`));
});

Deno.test("buildBatch: every event becomes a mining_events row with its data as payload", () => {
  const events = [
    ev("share_submitted", 100, { user: "u", worker: "w", accepted: true }, {
      seq: 7,
      emitter: "abc",
    }),
    ev("future_thing", 101, { anything: [1, 2], user: 42 }, { source: "proxy" }),
  ];
  const rows = buildBatch(events);
  assert.equal(rows.events.length, 2);
  assert.deepEqual(rows.events[0], {
    t: 100,
    e: "share_submitted",
    s: "hosted",
    m: "abc",
    q: 7,
    p: events[0].data,
    i: "abc:7",
  });
  assert.deepEqual(rows.events[1], {
    t: 101,
    e: "future_thing",
    s: "proxy",
    m: null,
    q: null,
    p: { anything: [1, 2], user: 42 },
    i: events[1].id,
  });
  assert.match(events[1].id, /^sha256:[0-9a-f]{32}$/);
  // A non-string user in an unknown event is not an address.
  assert.deepEqual(rows.users, [{ u: "u", t: 100 }]);
});

Deno.test("buildBatch: shares carry diff, sdiff, outcome, reason and event id", () => {
  const batch = [
    ev("share_submitted", 10, {
      user: "u",
      worker: "w",
      diff: 512,
      sdiff: 1234.5,
      accepted: true,
      ip: "10.0.0.1",
    }),
    ev("share_submitted", 11, {
      user: "u",
      worker: "w",
      diff: 512,
      sdiff: 3,
      accepted: false,
      reject_reason: "Stale",
    }),
  ];
  const rows = buildBatch(batch);
  assert.deepEqual(rows.shares, [
    {
      t: 10,
      u: "u",
      w: "w",
      d: 512,
      sd: 1234.5,
      a: true,
      b: false,
      r: null,
      ip: "10.0.0.1",
      s: "hosted",
      m: null,
      q: null,
      i: batch[0].id,
    },
    {
      t: 11,
      u: "u",
      w: "w",
      d: 512,
      sd: 3,
      a: false,
      b: false,
      r: "Stale",
      ip: null,
      s: "hosted",
      m: null,
      q: null,
      i: batch[1].id,
    },
  ]);
});

Deno.test("buildBatch: users get the latest ts; empty and NUL-only differences collapse", () => {
  const rows = buildBatch([
    ev("hashrate_update", 50, { user: "b", worker: "w" }),
    ev("miner_connected", 30, { user: "a", worker: "w" }),
    ev("new_block_network", 60, { height: 5 }),
    ev("share_submitted", 20, { user: "a", worker: "w" }),
    // Past validation, which refuses NUL: the sink strips it, so "b\0" is user "b".
    unchecked(ev("share_best_diff", 40, { user: "b", worker: "w" }), { user: "b\0" }),
    ev("future_thing", 70, { user: "c" }),
    ev("share_submitted", 80, { user: "", worker: "w" }),
  ]);
  assert.deepEqual(rows.users, [{ u: "a", t: 30 }, { u: "b", t: 50 }, { u: "c", t: 70 }]);
});

Deno.test("buildBatch: the latest connection evidence by ts decides the online state", () => {
  const rows = buildBatch([
    // w1: disconnect arrives first but is later in time → offline.
    ev("miner_disconnected", 20, { user: "u", worker: "w1" }),
    ev("miner_connected", 10, { user: "u", worker: "w1" }),
    // w2: a share after the disconnect means it is connected again → online.
    ev("miner_connected", 10, { user: "u", worker: "w2" }),
    ev("miner_disconnected", 11, { user: "u", worker: "w2" }),
    ev("share_submitted", 12, { user: "u", worker: "w2", accepted: true }),
    // w3: same ts, the later event in the batch wins → offline.
    ev("miner_connected", 30, { user: "u", worker: "w3" }),
    ev("miner_disconnected", 30, { user: "u", worker: "w3" }),
    // w4: no connection evidence at all → state unknown (null).
    ev("hashrate_update", 5, { user: "u", worker: "w4", hashrate_1m: 1 }),
  ]);
  const state = Object.fromEntries(rows.workers.map((w) => [w.w, w.st]));
  assert.deepEqual(state, { w1: false, w2: true, w3: false, w4: null });
  const w1 = rows.workers.find((w) => w.w === "w1")!;
  assert.equal(w1.ca, 10);
  assert.equal(w1.da, 20);
  assert.equal(w1.ls, 20);
});

Deno.test("buildBatch: worker diff, hashrates, ip and useragent come from the latest event", () => {
  const rows = buildBatch([
    ev("miner_connected", 10, {
      user: "u",
      worker: "w",
      ip: "10.0.0.1",
      useragent: "cgminer/4.12",
      initial_diff: 512,
    }),
    ev("diff_updated", 30, { user: "u", worker: "w", old_diff: 512, new_diff: 2048 }),
    ev("diff_updated", 20, { user: "u", worker: "w", old_diff: 512, new_diff: 1024 }),
    ev("hashrate_update", 40, {
      user: "u",
      worker: "w",
      hashrate_1m: 1,
      hashrate_5m: 2,
      hashrate_1h: 3,
      hashrate_1d: 4,
    }),
    ev("hashrate_update", 35, { user: "u", worker: "w", hashrate_1m: 99 }),
    ev("share_submitted", 45, { user: "u", worker: "w", accepted: true, ip: "10.0.0.2" }),
    ev("share_submitted", 46, { user: "u", worker: "w", accepted: false }),
    ev("share_submitted", 47, { user: "u", worker: "w", accepted: true }),
  ]);
  assert.equal(rows.workers.length, 1);
  assert.deepEqual(rows.workers[0], {
    u: "u",
    w: "w",
    s: "hosted",
    st: true,
    ca: 10,
    da: null,
    sa: 47,
    ls: 47,
    d: 2048,
    h1m: 1,
    h5m: 2,
    h1h: 3,
    h1d: 4,
    ht: 40,
    ip: "10.0.0.2",
    ua: "cgminer/4.12",
    na: 2,
    nr: 1,
  });
});

Deno.test("buildBatch: workers need a user and a worker name, and only worker events", () => {
  const rows = buildBatch([
    ev("miner_connected", 1, { user: "", worker: "w" }),
    ev("miner_connected", 1, { user: "u", worker: "" }),
    ev("share_best_diff", 1, { user: "u", worker: "w", new_best: 5 }),
    ev("block_found", 1, { user: "u", worker: "w", height: 1, hash: "ab".repeat(32) }),
  ]);
  assert.deepEqual(rows.workers, []);
  assert.deepEqual(rows.users, [{ u: "u", t: 1 }]);
});

Deno.test("buildBatch: weekly best counts accepted shares only, per ISO week", () => {
  const rows = buildBatch([
    ev("share_submitted", SUNDAY_LAST_SECOND - 60, {
      user: "u",
      sdiff: 10,
      accepted: true,
    }),
    ev("share_submitted", SUNDAY_LAST_SECOND - 30, {
      user: "u",
      sdiff: 500,
      accepted: true,
    }),
    // A rejected share with a huge sdiff must not count.
    ev("share_submitted", SUNDAY_LAST_SECOND - 20, {
      user: "u",
      sdiff: 1e9,
      accepted: false,
    }),
    // Equal best later: the first time it was reached is kept.
    ev("share_submitted", SUNDAY_LAST_SECOND, { user: "u", sdiff: 500, accepted: true }),
    ev("share_submitted", MONDAY_MIDNIGHT, { user: "u", sdiff: 7, accepted: true }),
    ev("share_submitted", MONDAY_MIDNIGHT + 1, { user: "v", sdiff: 8, accepted: true }),
    // A share without a user has no leaderboard row.
    ev("share_submitted", MONDAY_MIDNIGHT + 2, { user: "", sdiff: 9e9, accepted: true }),
  ]);
  assert.deepEqual(rows.weekly, [
    { u: "u", wk: "2024-02-19", b: 500, bt: SUNDAY_LAST_SECOND - 30, n: 3 },
    { u: "u", wk: "2024-02-26", b: 7, bt: MONDAY_MIDNIGHT, n: 1 },
    { u: "v", wk: "2024-02-26", b: 8, bt: MONDAY_MIDNIGHT + 1, n: 1 },
  ]);
});

Deno.test("buildBatch: blocks with the same hash merge, blocks with others do not", () => {
  const rows = buildBatch([
    ev("block_found", 100, { user: "", worker: "", height: 812_345, hash: "00ab".repeat(16) }),
    ev("block_found", 101, {
      user: "u",
      worker: "w",
      height: 812_345,
      hash: "00ab".repeat(16),
      diff: 2e6,
      network_diff: 1.5e6,
      reward_sats: 312_500_000,
      coinbase_sig: "/TBG/",
    }),
    ev("block_found", 102, { user: "u", height: 812_346, hash: "01".repeat(32) }),
    ev("block_found", 103, { user: "u", height: 812_347, hash: "02".repeat(32) }),
  ]);
  assert.deepEqual(rows.blocks, [
    {
      h: 812_345,
      hash: "00ab".repeat(16),
      u: "u",
      w: "w",
      r: 312_500_000,
      d: 2e6,
      nd: 1.5e6,
      cb: "/TBG/",
      s: "hosted",
      t: 100,
    },
    {
      h: 812_346,
      hash: "01".repeat(32),
      u: "u",
      w: null,
      r: 0,
      d: 0,
      nd: 0,
      cb: null,
      s: "hosted",
      t: 102,
    },
    {
      h: 812_347,
      hash: "02".repeat(32),
      u: "u",
      w: null,
      r: 0,
      d: 0,
      nd: 0,
      cb: null,
      s: "hosted",
      t: 103,
    },
  ]);
});

Deno.test("buildBatch: keys are cleaned before they are compared", () => {
  const rows = buildBatch([
    // Past validation, which refuses NUL.
    unchecked(ev("miner_connected", 1, { user: "u", worker: "w" }), { user: "u\0", worker: "w\0" }),
    ev("miner_disconnected", 2, { user: "u", worker: "w" }),
  ]);
  assert.equal(rows.workers.length, 1);
  assert.equal(rows.workers[0].u, "u");
  assert.equal(rows.workers[0].w, "w");
  assert.equal(rows.workers[0].st, false);
});

Deno.test("copyText: escapes backslash, tab, newline and carriage return; null is \\N", () => {
  assert.equal(copyText("plain ü🚀 \"q\" 'a'"), "plain ü🚀 \"q\" 'a'");
  assert.equal(copyText("a\\b\tc\nd\re"), "a\\\\b\\tc\\nd\\re");
  assert.equal(copyText("\\N"), "\\\\N"); // the text, not NULL
  assert.equal(copyText("\\."), "\\\\."); // never the end-of-data marker
  assert.equal(copyText(""), "");
  assert.equal(copyText(null), "\\N");
});

Deno.test("copyJson: toJson with every backslash doubled", () => {
  const value = { "k\t": 'a\\b\n"c"', nul: "x\0y", lone: "\uD800" };
  assert.equal(copyJson(value), toJson(value).replaceAll("\\", "\\\\"));
  assert.equal(copyJson({ a: 1 }), '{"a":1}');
  assert.ok(!/[\t\n\r]/.test(copyJson(value)));
});

Deno.test("copyTimestamp: the microsecond to_timestamp stores, in UTC", () => {
  assert.equal(copyTimestamp(0), "1970-01-01T00:00:00Z");
  assert.equal(copyTimestamp(MONDAY_MIDNIGHT), "2024-02-26T00:00:00Z");
  assert.equal(copyTimestamp(MONDAY_MIDNIGHT + 0.25), "2024-02-26T00:00:00.250000Z");
  assert.equal(copyTimestamp(MONDAY_MIDNIGHT - 0.000001), "2024-02-25T23:59:59.999999Z");
  assert.equal(copyTimestamp(1_700_000_000.1234567), "2023-11-14T22:13:20.123457Z");
  assert.equal(copyTimestamp(MAX_TS), "9999-12-31T23:59:59Z");
  assert.equal(copyTimestamp(MAX_TS - 0.5), "9999-12-31T23:59:58.500000Z");
  // Before PostgreSQL's epoch (2000-01-01) the microseconds are still counted forwards.
  assert.equal(copyTimestamp(946_684_799.75), "1999-12-31T23:59:59.750000Z");
  // rint rounds a tie to even: (ts - 946684800) * 1e6 is exactly 7812.5, 23437.5, -7812.5.
  assert.equal(copyTimestamp(946_684_800 + 2 ** -7), "2000-01-01T00:00:00.007812Z");
  assert.equal(copyTimestamp(946_684_800 + 3 * 2 ** -7), "2000-01-01T00:00:00.023438Z");
  assert.equal(copyTimestamp(946_684_800 - 2 ** -7), "1999-12-31T23:59:59.992188Z");
});

Deno.test("eventsCopy and sharesCopy: one line per row, columns in the declared order", () => {
  const rows = buildBatch([
    ev("share_submitted", 1.5, {
      user: "u\tv",
      worker: "w\n",
      diff: 2,
      sdiff: 3.5,
      accepted: false,
      reject_reason: "Stale\\",
      ip: "::1\r",
    }, { seq: 7, emitter: "e0" }),
    ev("odd_type", 2, { x: "a\tb" }),
  ]);
  const hashed = rows.events[1].i;
  assert.equal(
    eventsCopy(rows.events),
    "1970-01-01T00:00:01.500000Z\tshare_submitted\thosted\te0\t7\t" +
      copyJson(rows.events[0].p) + "\te0:7\n" +
      `1970-01-01T00:00:02Z\todd_type\thosted\t\\N\t\\N\t{"x":"a\\\\tb"}\t${hashed}\n`,
  );
  assert.equal(
    sharesCopy(rows.shares),
    "1970-01-01T00:00:01.500000Z\tu\\tv\tw\\n\t2\t3.5\tf\tf\tStale\\\\\t::1\\r\thosted\te0\t7\t" +
      "e0:7\n",
  );
  // An id built elsewhere is cleaned and escaped like any text.
  const odd = buildBatch([{ ...ev("odd_type", 2), id: "a\tb\0c" }]);
  assert.equal(odd.events[0].i, "a\tbc");
  assert.ok(eventsCopy(odd.events).endsWith("\ta\\tbc\n"));
  assert.equal(eventsCopy([]), "");
});

Deno.test("withoutRepeats keeps the first of each id, and leaves out stored ids", () => {
  const a = ev("share_submitted", 1, { user: "u", worker: "w", accepted: true }, {
    seq: 1,
    emitter: "e0",
  });
  const b = ev("share_submitted", 2, { user: "u", worker: "w", accepted: true }, {
    seq: 2,
    emitter: "e0",
  });
  // The same id with other content (a resend is the same bytes; this only proves which wins).
  const aAgain = { ...ev("share_submitted", 1, { user: "u", worker: "w" }), id: a.id };
  const c = ev("miner_connected", 3, { user: "u", worker: "w" });

  const clean = [a, b, c];
  assert.equal(withoutRepeats(clean), clean, "nothing left out: the batch itself");
  assert.deepEqual(withoutRepeats([a, b, aAgain, c, b]), [a, b, c]);
  assert.equal(withoutRepeats([aAgain, a])[0], aAgain, "the first one is kept");
  assert.deepEqual(withoutRepeats(clean, new Set([b.id])), [a, c]);
  assert.deepEqual(withoutRepeats(clean, new Set([a.id, b.id, c.id])), []);
  // Ids that differ only by what PostgreSQL cannot store are one id.
  const nul = { ...c, id: `${c.id}\0` };
  assert.equal(storedId(nul), c.id);
  assert.deepEqual(withoutRepeats([c, nul]), [c]);

  // What the state tables get from a batch with a repeat is what they get without it.
  const twice = buildBatch(withoutRepeats([a, b, a, b, aAgain]));
  assert.deepEqual(twice, buildBatch([a, b]));
  assert.equal(twice.workers[0].na, 2);
  assert.equal(twice.weekly[0].n, 2);
});

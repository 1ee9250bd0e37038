import assert from "node:assert/strict";
import { decodeDatagram } from "../src/datagram.ts";
import { DatagramBatchBuilder, forEachDatagram } from "../src/datagram_batch.ts";

function batchOf(datagrams: Array<{ bytes: Uint8Array; truncated: boolean }>) {
  const builder = new DatagramBatchBuilder();
  for (const { bytes, truncated } of datagrams) builder.append(bytes, truncated);
  return builder.take();
}

const encode = (text: string) => new TextEncoder().encode(text);

Deno.test("a valid datagram decodes to its event", () => {
  const result = decodeDatagram(
    encode('{"event":"share_submitted","ts":1.5,"source":"hosted","data":{"user":"ü\\"\\\\"}}'),
    false,
  );
  assert.ok(result.ok);
  assert.equal(result.event.data.user, 'ü"\\');
});

Deno.test("each kind of bad datagram gets its own reason", () => {
  const cases: Array<[Uint8Array, boolean, string]> = [
    [encode('{"event":"x","ts":1,"source":"hosted"}'), true, "oversized"],
    [new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]), false, "not_utf8"],
    [encode("{not json"), false, "not_json"],
    [encode(""), false, "not_json"],
    [encode('{"event":"x","ts":"soon","source":"hosted"}'), false, "invalid_envelope"],
    [
      encode('{"event":"share_submitted","ts":1,"source":"hosted","data":{"diff":"1"}}'),
      false,
      "invalid_data",
    ],
  ];
  for (const [bytes, truncated, reason] of cases) {
    const result = decodeDatagram(bytes, truncated);
    assert.ok(!result.ok);
    assert.equal(result.reason, reason);
  }
});

Deno.test("a batch carries datagrams, lengths and truncation flags in order", () => {
  const datagrams = [
    { bytes: encode("first"), truncated: false },
    { bytes: new Uint8Array(0), truncated: false },
    { bytes: encode("third, cut"), truncated: true },
  ];
  const batch = batchOf(datagrams);
  const seen: Array<[string, boolean]> = [];
  forEachDatagram(batch, (bytes, truncated) => {
    seen.push([new TextDecoder().decode(bytes), truncated]);
  });
  assert.deepEqual(seen, [["first", false], ["", false], ["third, cut", true]]);
});

Deno.test("a batch counts refused senders and names the last one; take starts afresh", () => {
  const builder = new DatagramBatchBuilder();
  assert.ok(builder.empty);
  builder.refuse(65534, 4711);
  assert.ok(!builder.empty, "a refusal alone is worth handing over");
  builder.append(encode("kept"), false);
  builder.refuse(-1, -1);
  builder.refuse(1001, 42);
  const batch = builder.take();
  assert.equal(batch.count, 1);
  assert.equal(batch.refusedSenders, 3);
  assert.equal(batch.lastRefusedUid, 1001);
  assert.equal(batch.lastRefusedPid, 42);
  assert.ok(builder.empty);
  const next = builder.take();
  assert.deepEqual([next.count, next.refusedSenders, next.lastRefusedUid, next.lastRefusedPid], [
    0,
    0,
    -1,
    -1,
  ]);
});

Deno.test("datagrams a sink could not store as sent are refused as invalid_data", () => {
  const event = (data: string) => encode(`{"event":"x","ts":1,"source":"hosted","data":${data}}`);
  const cases: Array<[Uint8Array, string]> = [
    [event('{"a":"\\u0000"}'), "NUL"],
    [event('{"a":"\\uD800"}'), "lone surrogate"],
    [event('{"a":1e400}'), "Infinity is not a finite number"],
    // 10,000 levels: refused with a reason, not a stack overflow.
    [event(`{"a":${"[".repeat(10_000)}${"]".repeat(10_000)}}`), "deeper than 32"],
  ];
  for (const [bytes, detail] of cases) {
    const result = decodeDatagram(bytes, false);
    assert.ok(!result.ok);
    assert.equal(result.reason, "invalid_data");
    assert.ok(result.detail.includes(detail), result.detail);
  }
});

Deno.test("what JSON or UTF-8 cannot carry is refused before validation", () => {
  const cases: Array<[Uint8Array, string]> = [
    [encode('{"event":"x","ts":NaN,"source":"hosted"}'), "not_json"],
    [encode('{"event":"x","ts":Infinity,"source":"hosted"}'), "not_json"],
    [encode('{"event":"x","ts":1,"source":"hosted","data":{"a":"\t"}}'), "not_json"],
    // U+D800 encoded in UTF-8 (CESU-8 style) is not valid UTF-8.
    [new Uint8Array([0x22, 0xed, 0xa0, 0x80, 0x22]), "not_utf8"],
  ];
  for (const [bytes, reason] of cases) {
    const result = decodeDatagram(bytes, false);
    assert.ok(!result.ok);
    assert.equal(result.reason, reason);
  }
});

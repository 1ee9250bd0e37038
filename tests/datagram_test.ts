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

import assert from "node:assert/strict";
import { decodeDatagram } from "../src/datagram.ts";
import { decodeFrame, FrameBuilder, frameLength } from "../src/buffer/frame.ts";

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

Deno.test("frames built back to back carry datagrams, lengths and truncation flags in order", () => {
  const builder = new FrameBuilder();
  assert.equal(builder.finishFrame(), undefined, "no record, no frame");
  builder.append(encode("first"));
  builder.append(new Uint8Array(0));
  const first = builder.finishFrame()!;
  assert.equal(first.count, 2);
  const firstBytes = first.bytes.slice();
  builder.append(encode("third, cut"), true);
  builder.finishFrame();
  const buffer = new Uint8Array(builder.take());
  assert.deepEqual(buffer.subarray(0, firstBytes.length), firstBytes, "a frame is its view");
  const frames = [];
  for (let offset = 0; offset < buffer.length; offset += frameLength(buffer, offset)) {
    frames.push(decodeFrame(buffer.subarray(offset, offset + frameLength(buffer, offset)))!);
  }
  const seen = frames.map((frame) =>
    frame.map(({ bytes, truncated }) => [new TextDecoder().decode(bytes), truncated])
  );
  assert.deepEqual(seen, [[["first", false], ["", false]], [["third, cut", true]]]);
  assert.equal(builder.byteLength, 0, "take starts afresh");
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

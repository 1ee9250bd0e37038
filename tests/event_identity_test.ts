import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { decodeDatagram } from "../src/datagram.ts";
import { CONTENT_ID_PREFIX, contentId, eventId } from "../src/event_identity.ts";
import { parseEvent } from "../src/events.ts";

const encode = (text: string) => new TextEncoder().encode(text);
const sha256 = (data: Uint8Array | string) => createHash("sha256").update(data).digest("hex");

Deno.test("an event with emitter and seq is {emitter}:{seq}, and nothing is hashed", () => {
  let asked = false;
  const id = eventId("9f3c2a1b0d4e5f60", 4711, () => {
    asked = true;
    return "";
  });
  assert.equal(id, "9f3c2a1b0d4e5f60:4711");
  assert.equal(asked, false);
  assert.equal(eventId("a", 0, new Uint8Array()), "a:0");
});

Deno.test("without emitter or seq the id is sha256: and 32 hex digits of the content", () => {
  const bytes = encode('{"event":"x","ts":1,"source":"hosted","seq":5}');
  const expected = `sha256:${sha256(bytes).slice(0, 32)}`;
  assert.equal(eventId(undefined, 5, bytes), expected);
  assert.equal(eventId("ab", undefined, bytes), expected);
  assert.equal(eventId(undefined, undefined, bytes), expected);
  assert.match(expected, /^sha256:[0-9a-f]{32}$/);
  // Text is hashed as UTF-8, the same as its bytes.
  assert.equal(contentId('{"ü":1}'), contentId(encode('{"ü":1}')));
  assert.equal(eventId(undefined, undefined, () => '{"ü":1}'), contentId('{"ü":1}'));
  assert.ok(contentId("a").startsWith(CONTENT_ID_PREFIX));
  assert.notEqual(contentId("a"), contentId("b"));
});

Deno.test("a view into a larger buffer hashes only its own bytes", () => {
  const whole = encode('xx{"event":"x","ts":1,"source":"hosted"}yy');
  const view = whole.subarray(2, whole.length - 2);
  assert.equal(contentId(view), contentId(new Uint8Array(view)));
  assert.equal(
    contentId(view),
    `sha256:${sha256('{"event":"x","ts":1,"source":"hosted"}')}`.slice(0, 39),
  );
});

Deno.test("decodeDatagram: the same datagram decoded twice gets the same id", () => {
  const numbered = encode(
    '{"event":"share_submitted","ts":1.5,"source":"hosted","seq":7,"emitter":"0badcafe"}',
  );
  const first = decodeDatagram(numbered, false);
  assert.ok(first.ok);
  assert.equal(first.event.id, "0badcafe:7");

  const bare = encode('{"event":"share_submitted","ts":1.5,"source":"hosted","seq":7}');
  const a = decodeDatagram(bare, false);
  const b = decodeDatagram(new Uint8Array(bare), false);
  assert.ok(a.ok && b.ok);
  assert.equal(a.event.id, `sha256:${sha256(bare).slice(0, 32)}`);
  assert.equal(a.event.id, b.event.id);

  // The same event written with other spacing is other bytes, hence another id: identity
  // without seq is about the datagram, not its meaning.
  const spaced = decodeDatagram(
    encode('{"event": "share_submitted", "ts": 1.5, "source": "hosted", "seq": 7}'),
    false,
  );
  assert.ok(spaced.ok);
  assert.notEqual(spaced.event.id, a.event.id);
});

Deno.test("parseEvent without bytes hashes JSON.stringify of the value", () => {
  const value = { event: "pool_stats", ts: 2, source: "proxy", data: { x: [1] } };
  const parsed = parseEvent(value);
  assert.ok(parsed.ok);
  assert.equal(parsed.event.id, contentId(JSON.stringify(value)));
  const withSeq = parseEvent({ ...value, seq: 3, emitter: "ff" });
  assert.ok(withSeq.ok);
  assert.equal(withSeq.event.id, "ff:3");
  // Two events that differ anywhere differ in id.
  const other = parseEvent({ ...value, ts: 2.000001 });
  assert.ok(other.ok);
  assert.notEqual(other.event.id, parsed.event.id);
});

Deno.test("parseEvent refuses, without throwing, a value that has no JSON form", () => {
  const data: Record<string, unknown> = { n: 1n };
  const result = parseEvent({ event: "pool_stats", ts: 2, source: "proxy", data });
  assert.ok(!result.ok);
  // With emitter and seq nothing is hashed, so only the contract decides.
  const numbered = parseEvent({
    event: "pool_stats",
    ts: 2,
    source: "proxy",
    seq: 1,
    emitter: "a",
  });
  assert.ok(numbered.ok);
});

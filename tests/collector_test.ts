import assert from "node:assert/strict";
import { Collector } from "../src/collector.ts";
import { qlenWarning, readMaxDgramQlen } from "../src/source/kernel_limits.ts";
import { renderLogValue } from "../src/ops/log.ts";
import { encode, recordsOf, share } from "./support/spool_records.ts";

/** A datagram that arrived whole. */
const whole = (bytes: Uint8Array) => ({ bytes, truncated: false });

Deno.test("bad datagrams are counted by reason and the good ones around them come out in order", () => {
  const collector = new Collector();
  const garbage = crypto.getRandomValues(new Uint8Array(64 * 1024));
  const events = collector.ingest(recordsOf([
    { bytes: encode(share(1)), truncated: false },
    { bytes: new Uint8Array([0xc3, 0x28]), truncated: false },
    { bytes: encode(share(2)), truncated: false },
    { bytes: encode("{oops"), truncated: false },
    { bytes: garbage.subarray(0, 16 * 1024), truncated: true },
    { bytes: encode({ ...share(3), source: "elsewhere" }), truncated: false },
    { bytes: encode({ ...share(4), data: { diff: "high" } }), truncated: false },
    { bytes: encode(share(5)), truncated: false },
    {
      bytes: encode({ event: "brand_new", ts: 2, source: "proxy", data: { k: 1 } }),
      truncated: false,
    },
  ]));

  assert.deepEqual(events.map((e) => e.seq ?? e.event), [1, 2, 5, "brand_new"]);
  const counters = collector.counters();
  assert.equal(counters.received, 9);
  assert.equal(counters.accepted, 4);
  assert.deepEqual(counters.invalid, {
    oversized: 1,
    not_utf8: 1,
    not_json: 1,
    invalid_envelope: 1,
    invalid_data: 1,
    unauthorized_sender: 0,
  });
  assert.deepEqual(counters.byType, { share_submitted: 3, brand_new: 1 });
  // seq 3 and 4 were sent but rejected, so from the emitter's numbering they are missing.
  assert.equal(counters.lost, 2);
});

Deno.test("records of only bad datagrams give no event", () => {
  const collector = new Collector();
  const events = collector.ingest(
    recordsOf([encode("null"), encode("[]"), encode("")].map(whole)),
  );
  assert.deepEqual(events, []);
  assert.equal(collector.counters().received, 3);
});

Deno.test("seq gaps per emitter show up as lost", () => {
  const collector = new Collector();
  collector.ingest(recordsOf([1, 2, 3, 7, 8].map((seq) => whole(encode(share(seq))))));
  collector.ingest(
    recordsOf([1, 2].map((seq) => whole(encode({ ...share(seq), emitter: "00bb" }))), 5),
  );
  assert.equal(collector.counters().lost, 3);
});

Deno.test("the queue-length warning names the sysctl when it is low, and only then", async () => {
  const warning = qlenWarning(10);
  assert.ok(warning?.includes("sysctl -w net.unix.max_dgram_qlen=4096"), warning);
  assert.ok(warning?.includes("is 10"), warning);
  assert.equal(qlenWarning(4096), undefined);
  assert.equal(qlenWarning(undefined), undefined);
  const file = await Deno.makeTempFile();
  try {
    await Deno.writeTextFile(file, "512\n");
    assert.equal(readMaxDgramQlen(file), 512);
    assert.equal(readMaxDgramQlen(`${file}.missing`), undefined);
  } finally {
    await Deno.remove(file);
  }
});

Deno.test("log values stay on one line: control characters are escaped, plain text is bare", () => {
  const inspect = (value: unknown) => JSON.stringify(value);
  assert.equal(renderLogValue("received=3 lost=0", inspect), "received=3 lost=0");
  assert.equal(renderLogValue("evil\nINF forged line", inspect), '"evil\\nINF forged line"');
  assert.equal(renderLogValue(42, inspect), "42");
});

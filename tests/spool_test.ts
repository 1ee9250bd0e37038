import * as assert from "node:assert/strict";
import { configure, type LogRecord, reset } from "@logtape/logtape";
import { waitFor } from "./support/wait.ts";
import { Spool, type SpoolOptions } from "../src/buffer/spool.ts";
import { decodeFrame, encodeFrame } from "../src/buffer/frame.ts";
import { segmentName } from "../src/buffer/writer.ts";
import { SpoolReader } from "../src/buffer/reader.ts";
import type { SpoolRecord } from "../src/buffer/spool.ts";
import { writable } from "./support/writable_spool.ts";

const text = new TextEncoder();
const untext = new TextDecoder();

function records(from: number, count: number): Uint8Array[] {
  return Array.from({ length: count }, (_, i) => text.encode(`record-${from + i}`));
}

function contents(spool: Spool, from = 0, max = 1_000_000): string[] {
  return spool.read(from, max).map((record) => `${record.index}:${untext.decode(record.bytes)}`);
}

function expected(from: number, to: number): string[] {
  return Array.from({ length: to - from }, (_, i) => `${from + i}:record-${from + i}`);
}

function segmentFiles(dir: string): string[] {
  return [...Deno.readDirSync(dir)].map((e) => e.name).filter((n) => n.endsWith(".spool")).sort();
}

async function withSpoolDir(run: (dir: string) => Promise<void> | void): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "tbg-spool-" });
  try {
    await run(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const open = (options: SpoolOptions) => writable(Spool.open(options));

const small = (dir: string, extra: Partial<SpoolOptions> = {}): SpoolOptions => ({
  dir,
  maxBytes: 1024 * 1024,
  fsyncIntervalMs: 1000,
  readers: ["a", "b"],
  segmentBytes: 200,
  ...extra,
});

Deno.test("a frame round-trips and a damaged or cut frame is refused", () => {
  const frame = encodeFrame(records(0, 3));
  assert.deepEqual(decodeFrame(frame)?.map((r) => untext.decode(r.bytes)), [
    "record-0",
    "record-1",
    "record-2",
  ]);
  assert.equal(decodeFrame(frame.subarray(0, frame.length - 1)), undefined);
  const flipped = frame.slice();
  flipped[frame.length - 2] ^= 1;
  assert.equal(decodeFrame(flipped), undefined);
});

Deno.test("records are numbered in order and read back across segments", async () => {
  await withSpoolDir(async (dir) => {
    const spool = open(small(dir));
    assert.equal(spool.append(records(0, 10)), 0);
    assert.equal(spool.append(records(10, 5)), 10);
    assert.equal(spool.append([]), 15);
    assert.equal(spool.append(records(15, 20)), 15);
    assert.equal(spool.head, 35);
    assert.ok(segmentFiles(dir).length >= 2, "segments roll over at segmentBytes");
    assert.deepEqual(contents(spool), expected(0, 35));
    assert.deepEqual(contents(spool, 12, 5), expected(12, 17));
    assert.deepEqual(contents(spool, 35), []);
    await spool.close();
  });
});

Deno.test("what a reader returned stays intact while it reads on, frames larger than one read included", async () => {
  await withSpoolDir(async (dir) => {
    // One segment of several MiB: each read(2) of the reader takes many frames, and a frame of
    // 300 KiB is more than it asks for at once.
    const spool = open(small(dir, { segmentBytes: 64 * 1024 * 1024, maxBytes: 256 * 1024 * 1024 }));
    const body = (index: number) => {
      const size = index % 50 === 7 ? 100_000 : 20 + (index * 37) % 900;
      const bytes = new Uint8Array(size);
      for (let i = 0; i < size; i++) bytes[i] = (index * 31 + i) & 0xff;
      return bytes;
    };
    const reader = new SpoolReader(dir, 0, spool.signals);
    const taken: SpoolRecord[] = [];
    let next = 0;
    for (let round = 0; round < 40; round++) {
      // The files grow between reads, as they do under a reader that keeps up.
      const frame = Array.from({ length: 1 + (round % 5) }, (_, i) => body(next + i));
      next += frame.length;
      spool.append(frame);
      for (const record of reader.read(3 + (round % 4), 150_000)) taken.push(record);
    }
    while (reader.behind) for (const record of reader.read(1_000)) taken.push(record);
    reader.close();
    assert.equal(taken.length, next);
    taken.forEach((record, i) => {
      assert.equal(record.index, i);
      assert.deepEqual(record.bytes, body(i), `record ${i} is what was written`);
    });
    await spool.close();
  });
});

Deno.test("a frame that cannot be written is kept, and written in order once it can be", async () => {
  await withSpoolDir(async (dir) => {
    // Each frame starts a segment; a directory where the next one goes makes its write fail.
    const spool = open(small(dir, { segmentBytes: 1 }));
    spool.append(records(0, 2));
    Deno.mkdirSync(`${dir}/${segmentName(2)}`);
    spool.append(records(2, 2));
    spool.append(records(4, 2));
    assert.equal(spool.stats().unwritten, 4, "both kept in memory, in order");
    assert.equal(spool.stats().head, 6, "counted as received");
    assert.equal(spool.signals.head(), 2, "readers see only what is written");
    assert.deepEqual(contents(spool), expected(0, 2));
    assert.match(spool.writer.lastError?.message ?? "", /directory/i);
    Deno.removeSync(`${dir}/${segmentName(2)}`);
    spool.writer.retry();
    assert.equal(spool.stats().unwritten, 0);
    spool.append(records(6, 2));
    assert.deepEqual(contents(spool), expected(0, 8));
    await spool.close();
    const reopened = open(small(dir, { segmentBytes: 1 }));
    assert.deepEqual(contents(reopened), expected(0, 8), "all of them on disk");
    await reopened.close();
  });
});

Deno.test("a reopened spool keeps its records, head and reader positions", async () => {
  await withSpoolDir(async (dir) => {
    const first = open(small(dir));
    first.append(records(0, 30));
    first.confirm("a", 12);
    await first.close();

    const second = open(small(dir));
    assert.equal(second.head, 30);
    assert.equal(second.position("a"), 12);
    assert.equal(second.position("b"), 0);
    assert.deepEqual(contents(second), expected(0, 30));
    assert.equal(second.append(records(30, 1)), 30, "numbering continues");
    await second.close();
  });
});

Deno.test("segments every reader is past are deleted, and numbering survives an empty spool", async () => {
  await withSpoolDir(async (dir) => {
    const spool = open(small(dir));
    spool.append(records(0, 10));
    spool.append(records(10, 10));
    spool.append(records(20, 10));
    const before = segmentFiles(dir).length;
    spool.confirm("a", 30);
    assert.equal(segmentFiles(dir).length, before, "b still needs them");
    spool.confirm("b", 30);
    assert.equal(segmentFiles(dir).length, 1, "only the segment being written stays");
    assert.equal(spool.stats().behind.a, 0);
    await spool.close();

    const reopened = open(small(dir));
    assert.equal(reopened.head, 30);
    assert.equal(reopened.position("b"), 30);
    assert.deepEqual(contents(reopened, reopened.position("a")), []);
    await reopened.close();
  });
});

Deno.test("a frame cut short by a crash is removed and writing goes on after it", async () => {
  await withSpoolDir(async (dir) => {
    const spool = open(small(dir, { segmentBytes: 1024 * 1024 }));
    spool.append(records(0, 5));
    spool.append(records(5, 5));
    await spool.close();
    const [segment] = segmentFiles(dir);
    const frame = encodeFrame(records(10, 5));
    const file = await Deno.open(`${dir}/${segment}`, { append: true });
    await file.write(frame.subarray(0, frame.length - 3));
    file.close();

    const reopened = open(small(dir, { segmentBytes: 1024 * 1024 }));
    assert.equal(reopened.head, 10);
    assert.equal(reopened.append(records(10, 2)), 10);
    assert.deepEqual(contents(reopened), expected(0, 12));
    await reopened.close();
  });
});

Deno.test("a damaged frame in the middle is skipped, its neighbours intact", async () => {
  await withSpoolDir(async (dir) => {
    const spool = open(small(dir, { segmentBytes: 1024 * 1024 }));
    spool.append(records(0, 3));
    spool.append(records(3, 3));
    spool.append(records(6, 3));
    await spool.close();
    const [segment] = segmentFiles(dir);
    const bytes = await Deno.readFile(`${dir}/${segment}`);
    const secondFrame = encodeFrame(records(0, 3)).length;
    bytes[secondFrame + 20] ^= 0xff;
    await Deno.writeFile(`${dir}/${segment}`, bytes);

    const reopened = open(small(dir, { segmentBytes: 1024 * 1024 }));
    assert.equal(reopened.head, 9);
    assert.deepEqual(contents(reopened), [...expected(0, 3), ...expected(6, 9)]);
    await reopened.close();
  });
});

Deno.test("a full spool deletes its oldest segments and moves lagging readers to the tail", async () => {
  await withSpoolDir(async (dir) => {
    const options = small(dir, { maxBytes: 4 * 1024, segmentBytes: 512 });
    const spool = open(options);
    for (let i = 0; i < 100; i++) {
      spool.append(records(i * 10, 10));
      spool.confirm("a", spool.head);
    }
    const stats = spool.stats();
    assert.ok(stats.bytes <= options.maxBytes, `${stats.bytes} bytes on disk`);
    assert.ok(stats.tail > 0, "old records were evicted");
    assert.equal(spool.position("a"), 1000, "the reader that kept up lost nothing");
    assert.equal(spool.position("b"), stats.tail, "the lagging reader moved to the tail");
    assert.deepEqual(contents(spool, 0), expected(stats.tail, 1000));
    const onDisk = segmentFiles(dir).reduce(
      (sum, name) => sum + Deno.statSync(`${dir}/${name}`).size,
      0,
    );
    assert.equal(onDisk, stats.bytes);
    await spool.close();
  });
});

Deno.test("a reader new to the directory starts at the oldest record", async () => {
  await withSpoolDir(async (dir) => {
    const spool = open(small(dir, { readers: ["a"] }));
    spool.append(records(0, 5));
    await spool.close();
    const reopened = open(small(dir, { readers: ["a", "c"] }));
    assert.equal(reopened.position("c"), 0);
    assert.equal(reopened.stats().behind.c, 5);
    await reopened.close();
  });
});

Deno.test("positions are saved on the timer, without a close", async () => {
  await withSpoolDir(async (dir) => {
    const spool = open(small(dir, { fsyncIntervalMs: 10 }));
    spool.append(records(0, 5));
    spool.confirm("a", 4);
    const saved = await waitFor(async () => {
      const parsed = JSON.parse(await Deno.readTextFile(`${dir}/positions.json`));
      return parsed.positions?.a === 4 && parsed;
    }, { what: "positions.json with a at 4" });
    assert.equal(saved.positions?.a, 4);
    await spool.close();
  });
});

Deno.test("a directory that cannot be used stops start-up naming SPOOL_DIR", async () => {
  await withSpoolDir((dir) => {
    const file = `${dir}/not-a-directory`;
    Deno.writeTextFileSync(file, "");
    assert.throws(
      () => open(small(`${file}/spool`)),
      (error: Error) => error.message.includes(file) && error.message.includes("SPOOL_DIR"),
    );
  });
});

Deno.test("the log says when the spool nears full and when it evicts, naming what to do", async () => {
  const records: LogRecord[] = [];
  await configure({
    sinks: { buffer: (record) => records.push(record) },
    loggers: [
      { category: ["tbg", "spool"], lowestLevel: "info", sinks: ["buffer"] },
      { category: ["logtape", "meta"], lowestLevel: "error", sinks: [] },
    ],
    reset: true,
  });
  try {
    await withSpoolDir(async (dir) => {
      const spool = open(small(dir, { maxBytes: 4 * 1024, segmentBytes: 512 }));
      const text = (level: string) =>
        records.filter((r) => r.level === level).map((r) => r.message.join(""));
      for (let i = 0; i < 30 && text("warning").length === 0; i++) spool.append(tenRecords(i));
      assert.match(text("warning")[0], /is (8[0-9]|9[0-9]|100)% full .* a sink is away or slow/);
      for (let i = 30; i < 100 && text("error").length === 0; i++) spool.append(tenRecords(i));
      assert.match(text("error")[0], /spool full .* raise SPOOL_MAX_BYTES or bring the backend/);
      await spool.close();
    });
  } finally {
    await reset();
  }
});

function tenRecords(i: number): Uint8Array[] {
  return records(i * 10, 10);
}

Deno.test("a directory another collector holds is refused, and free again once it closes", async () => {
  await withSpoolDir(async (dir) => {
    const first = open(small(dir));
    assert.throws(
      () => open(small(dir)),
      (error: Error) =>
        /in use by another collector/.test(error.message) &&
        error.message.includes("SPOOL_DIR"),
    );
    await first.close();
    const second = open(small(dir));
    await second.close();
  });
});

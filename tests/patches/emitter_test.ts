/**
 * The C event emitter (patches/tbg_events.c) on its own: it compiles cleanly, and a C driver
 * (emitter_driver.c) that binds a socket and calls every tbg_emit_* gets valid events.
 * Needs gcc, pkg-config and libjansson-dev; no ckpool tree.
 */
import assert from "node:assert/strict";
import { decodeDatagram } from "../../src/datagram.ts";
import { EVENT_FIELDS, isKnownEventType, parseEvent } from "../../src/events.ts";
import { PlainEventScanner } from "../../src/plain_event.ts";
import { RequestBuilder } from "../../src/sinks/redis/request.ts";

const KIT = new URL("../../patches/", import.meta.url).pathname;
const DRIVER = new URL("./emitter_driver.c", import.meta.url).pathname;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

async function run(cmd: string, args: string[]): Promise<Run> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

async function janssonFlags(which: "--cflags" | "--libs"): Promise<string[]> {
  const r = await run("pkg-config", [which, "jansson"]);
  assert.equal(r.code, 0, `pkg-config ${which} jansson: ${r.stderr}`);
  return r.stdout.trim().split(/\s+/).filter(Boolean);
}

async function withTempDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "tbg-emitter-" });
  try {
    return await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("tbg_events.c compiles on its own with -Wall -Wextra -Werror", async () => {
  await withTempDir(async (dir) => {
    // As the kit's docs say, and as a stricter C dialect
    for (const dialect of [[], ["-std=gnu99", "-pedantic"]]) {
      const std = dialect.join(" ") || "default";
      const r = await run("gcc", [
        ...dialect,
        "-Wall",
        "-Wextra",
        "-Werror",
        "-c",
        `${KIT}/tbg_events.c`,
        ...await janssonFlags("--cflags"),
        "-o",
        `${dir}/tbg_events.o`,
      ]);
      assert.equal(r.code, 0, `gcc -std=${std} failed:\n${r.stderr}`);
      assert.equal(r.stderr, "", `gcc -std=${std} printed warnings:\n${r.stderr}`);
    }
  });
});

/** Builds the driver, with AddressSanitizer and UBSan where the toolchain has them. */
async function buildDriver(dir: string): Promise<string> {
  const exe = `${dir}/emitter_driver`;
  const common = [
    "-std=gnu11",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-O1",
    "-g",
    "-pthread",
    "-I",
    KIT,
    `${KIT}/tbg_events.c`,
    DRIVER,
    ...await janssonFlags("--cflags"),
    ...await janssonFlags("--libs"),
    "-o",
    exe,
  ];
  const sanitized = await run("gcc", ["-fsanitize=address,undefined", ...common]);
  if (sanitized.code === 0) return exe;
  console.warn(`emitter driver: building without sanitizers (${sanitized.stderr.trim()})`);
  const plain = await run("gcc", common);
  assert.equal(plain.code, 0, `gcc failed:\n${plain.stderr}`);
  return exe;
}

interface Driven {
  events: Record<string, unknown>[];
  raw: string[];
  stats: Map<string, number>;
}

async function drive(): Promise<Driven> {
  return await withTempDir(async (dir) => {
    const exe = await buildDriver(dir);
    // The driver bounds every wait with SO_RCVTIMEO; this is the outer deadline.
    const child = new Deno.Command(exe, {
      args: [`${dir}/events.sock`],
      stdout: "piped",
      stderr: "piped",
      env: { UBSAN_OPTIONS: "halt_on_error=1", ASAN_OPTIONS: "detect_leaks=1" },
    }).spawn();
    const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
    const out = await child.output();
    clearTimeout(timer);
    const stdout = new TextDecoder().decode(out.stdout);
    const stderr = new TextDecoder().decode(out.stderr);
    const fails = stdout.split("\n").filter((l) => l.startsWith("FAIL"));
    assert.deepEqual(fails, [], `driver checks failed:\n${fails.join("\n")}\n${stderr}`);
    assert.equal(out.code, 0, `driver exited ${out.code}:\n${stdout}\n${stderr}`);
    const raw = stdout.split("\n").filter((l) => l.startsWith("DGRAM ")).map((l) => l.slice(6));
    const stats = new Map<string, number>();
    for (const line of stdout.split("\n")) {
      const m = /^STAT (\w+)=([\d.]+)$/.exec(line);
      if (m) stats.set(m[1], Number(m[2]));
    }
    return { events: raw.map((r) => JSON.parse(r)), raw, stats };
  });
}

let driven: Promise<Driven> | undefined;
const driveOnce = () => (driven ??= drive());

Deno.test("every tbg_emit_* sends one valid event, seq counting up from 1", async () => {
  const { events, raw } = await driveOnce();
  assert.deepEqual(events.map((e) => e.event), [
    "share_submitted",
    "share_submitted",
    "miner_connected",
    "miner_disconnected",
    "block_found",
    "new_block_network",
    "new_block_network",
    "share_best_diff",
    "diff_updated",
    "hashrate_update",
  ]);
  assert.deepEqual(events.map((e) => e.seq), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  const emitter = events[0].emitter;
  assert.match(String(emitter), /^[0-9a-f]{16}$/);
  for (const [i, event] of events.entries()) {
    assert.deepEqual(Object.keys(event), ["event", "ts", "source", "seq", "emitter", "data"]);
    assert.equal(event.source, "hosted");
    assert.equal(event.emitter, emitter);
    assert.ok(Math.abs(Number(event.ts) - Date.now() / 1000) < 120, `ts ${event.ts}`);
    // ts carries microseconds, not more
    assert.match(/"ts":([0-9.]+)/.exec(raw[i])![1], /^\d{10}(\.\d{1,6})?$/);
    // The collector's own contract accepts it, and declares every field sent
    const parsed = parseEvent(event);
    assert.ok(parsed.ok, `collector rejects ${raw[i]}: ${!parsed.ok && parsed.detail}`);
    const type = String(event.event);
    assert.ok(isKnownEventType(type), `${type} is not in contract/events.json`);
    const declared = Object.keys(EVENT_FIELDS[type]);
    const sentKeys = Object.keys(event.data as object);
    assert.deepEqual(sentKeys.filter((k) => !declared.includes(k)), [], `${type}: undeclared`);
    // Only new_block_network's prev_hash is left out when the emitter does not know it.
    const missing = declared.filter((k) => !sentKeys.includes(k));
    assert.deepEqual(missing, i === 5 ? ["prev_hash"] : [], `${type}: declared, not sent`);
  }
});

Deno.test("the Redis sink writes what the emitter sends from its bytes, as from its decode", async () => {
  const { events, raw } = await driveOnce();
  const scanner = new PlainEventScanner();
  const fromBytes = new RequestBuilder(1_000);
  const fromDecode = new RequestBuilder(1_000);
  let plain = 0;
  for (const [i, text] of raw.entries()) {
    const bytes = new TextEncoder().encode(text);
    // A block_found is announced whole, and an escape or a character past ASCII in a name
    // is rare: those take the decode.
    const expected = events[i].event !== "block_found" && /^[\x20-\x5b\x5d-\x7e]*$/.test(text);
    assert.equal(scanner.scan(bytes), expected, text);
    if (expected) plain++;
    fromBytes.clear();
    fromDecode.clear();
    assert.ok(fromBytes.addDatagram(bytes, false, 0));
    const decoded = decodeDatagram(bytes, false);
    assert.ok(decoded.ok);
    fromDecode.add(decoded.event, 0);
    assert.deepEqual(fromBytes.bytes(), fromDecode.bytes(), text);
  }
  assert.ok(plain >= raw.length / 2, `${plain} of ${raw.length} datagrams were plain`);
});

Deno.test("hostile names arrive intact or safely replaced", async () => {
  const { events } = await driveOnce();
  const data = events.map((e) => e.data as Record<string, unknown>);
  assert.deepEqual(data[0], {
    user: 'tb1q"quote\\back',
    worker: 'rig"1\\',
    client_id: 7,
    diff: 2.5,
    sdiff: 3.75,
    accepted: true,
    reject_reason: "",
    ip: "10.0.0.1",
    is_block: false,
  });
  // user taken from the workername; control characters kept, escaped by jansson
  assert.deepEqual(data[1], {
    user: "tb1qctl",
    worker: "w\u0001\t\n\u001f\u007f",
    client_id: 8,
    diff: 1,
    sdiff: 0, // -1 from ckpool means "not computed": sent as 0
    accepted: false,
    reject_reason: "Above target",
    ip: "::1",
    is_block: true,
  });
  assert.equal(data[2].worker, "wörker-日-🚀");
  assert.equal(data[2].useragent, 'bitaxe/"2.0"\\');
  assert.equal(data[2].initial_diff, 42);
  // invalid UTF-8 (stray bytes, truncated, overlong, surrogate) becomes U+FFFD
  assert.equal(data[3].worker, "\ufffd\ufffd\ufffd(\ufffd\ufffd\ufffd\ufffd\ufffdz");
  assert.equal(data[3].ip, "");
  assert.equal(data[3].session_duration, 61.5);
  assert.equal(data[3].shares_session, 12);
  assert.equal(data[3].rejects_session, 3);
  // an over-long worker is cut at 512 bytes, on a character boundary
  const long = String(data[4].worker);
  assert.equal(long, "é".repeat(256));
  assert.equal(new TextEncoder().encode(long).length, 512);
  assert.deepEqual({ ...data[4], worker: "" }, {
    user: "tb1qblock",
    worker: "",
    height: 200123,
    hash: "00000000000000000001abcdef0123456789abcdef0123456789abcdef012345",
    diff: 1234567.5,
    network_diff: 1000000,
    reward_sats: 312500000,
    coinbase_sig: "",
  });
  assert.deepEqual(data[5], {
    height: 200124,
    hash: "0000000000000000000fedcba",
    diff: 1000000.25,
  });
  assert.equal(data[6].prev_hash, "0000000000000000000fedcba");
  assert.deepEqual(data[7], {
    user: "tb1qbest",
    worker: "",
    new_best: 99999.5,
    prev_best: 1234.25,
    timeframe: "round",
  });
  assert.deepEqual(data[8], {
    user: "tb1qdiff",
    worker: "vardiff",
    client_id: 11,
    old_diff: 1024,
    new_diff: 2048.5,
  });
  // A negative or not-finite rate is sent as 0, like every number of the contract.
  assert.deepEqual(data[9], {
    user: "tb1qrate",
    worker: "s19",
    hashrate_1m: 1.1e14,
    hashrate_5m: 9.5e13,
    hashrate_1h: 0,
    hashrate_1d: 0,
  });
});

Deno.test("sending with no listener or a full queue neither blocks nor goes uncounted", async () => {
  const { stats } = await driveOnce();
  // 10 sends to a path nobody listens on: 10 failures, reported at 1, 2, 4 and 8
  assert.equal(stats.get("no_listener_failed"), 10);
  assert.equal(stats.get("no_listener_reports"), 4);
  assert.ok(stats.get("no_listener_seconds")! < 1, `took ${stats.get("no_listener_seconds")} s`);
  // 20000 sends to a receiver that reads nothing
  assert.ok(stats.get("full_queue_failed")! > 0);
  assert.ok(stats.get("full_queue_seconds")! < 5, `took ${stats.get("full_queue_seconds")} s`);
  // 4 threads x 5000 events: every seq once; received == sent, sent + failed == tried
  assert.equal(stats.get("threads_tried"), 20000);
  assert.ok(stats.get("threads_received")! > 0);
  assert.equal(stats.get("threads_received")! + stats.get("threads_failed")!, 20000);
  assert.equal(stats.get("failures"), 0);
  console.log(
    `emitter: no listener ${stats.get("no_listener_failed")} failed in ` +
      `${stats.get("no_listener_seconds")} s; full queue ${stats.get("full_queue_failed")} ` +
      `failed of 20000 in ${stats.get("full_queue_seconds")} s; threads ` +
      `${stats.get("threads_received")} received + ${stats.get("threads_failed")} failed = 20000`,
  );
});

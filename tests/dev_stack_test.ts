/**
 * The newcomer's local pipeline: the demo emitter's stream (valid by the collector's own
 * contract, and a consistent story), and `scripts/dev.ts` end to end: real redis-server,
 * postgres and collector on free ports in a temp data dir, stopped by SIGTERM, started again
 * on the same data.
 */
import assert from "node:assert/strict";
import { address } from "bitcoinjs-lib";
import postgres from "postgres";
import { createClient } from "redis";
import { dataSchemas, isKnownEventType, parseEvent } from "../src/events.ts";
import {
  DEMO_EVENT_TYPES,
  DEMO_MINERS,
  type DemoEvent,
  DemoStream,
  encodeEvent,
} from "../scripts/demo_emitter.ts";
import { freePort } from "./support/services.ts";
import { waitFor } from "./support/wait.ts";

const ROOT = new URL("../", import.meta.url).pathname;
/** The `dev` task's flags once deno.json runs scripts/dev.ts; until then, the proposed ones. */
function devFlags(): string[] {
  const task = JSON.parse(Deno.readTextFileSync(`${ROOT}deno.json`)).tasks?.dev;
  const words = typeof task === "string" ? task.trim().split(/\s+/) : [];
  if (words[0] === "deno" && words[1] === "run" && words.at(-1) === "scripts/dev.ts") {
    return words.slice(2, -1);
  }
  return [
    "--allow-env",
    "--allow-read",
    "--allow-write",
    "--allow-net",
    "--allow-run",
    "--allow-sys",
  ];
}

const T0 = 1_767_225_600;

/** `count` events from a fresh stream, one every 1/`rate` s of a synthetic clock. */
function demoRun(count: number, rate = 20, blockEverySeconds = 60): DemoEvent[] {
  const stream = new DemoStream({ seed: 42, emitter: "00c0ffee", blockEverySeconds });
  return Array.from({ length: count }, (_, i) => stream.next(T0 + i / rate));
}

Deno.test("demo addresses are valid signet bech32/bech32m addresses", () => {
  const users = new Set(DEMO_MINERS.map((m) => m.user));
  assert.ok(users.size >= 4);
  assert.ok(users.has("tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx"));
  for (const user of users) {
    const decoded = address.fromBech32(user); // checks the checksum (bech32 or bech32m)
    assert.equal(decoded.prefix, "tb");
    assert.equal(decoded.data.length, decoded.version === 0 ? 20 : 32);
  }
  const pairs = DEMO_MINERS.map((m) => `${m.user}.${m.worker}`);
  assert.equal(new Set(pairs).size, pairs.length);
});

Deno.test("demo events pass the collector's validation and tell a consistent story", () => {
  const events = demoRun(18_000); // 15 minutes at 20 events/s
  const types = new Set<string>();
  const rejectReasons = new Set<string>();
  const knownPairs = new Set(DEMO_MINERS.map((m) => `${m.user}\0${m.worker}`));
  const sessions = new Map<string, { clientId: number; diff: number; accepted: number }>();
  const clientIds = new Set<number>();
  let tip: { height: number; hash: string } | undefined;
  let lastBlock: { height: number; hash: string } | undefined;
  let connects = 0;
  let disconnects = 0;
  let shares = 0;
  let rejects = 0;

  events.forEach((event, i) => {
    const where = `event ${i + 1}: ${JSON.stringify(event)}`;
    // What the collector receives, validated as the collector validates it.
    const bytes = encodeEvent(event);
    assert.ok(bytes.length <= 16 * 1024, where);
    const parsed = parseEvent(JSON.parse(new TextDecoder().decode(bytes)));
    assert.ok(parsed.ok, `${where}: ${parsed.ok ? "" : parsed.detail}`);
    assert.ok(isKnownEventType(event.event), where);
    // Every field of the contract is sent (no reliance on the collector's defaults).
    for (const field of Object.keys(dataSchemas[event.event].shape)) {
      assert.ok(field in event.data, `${where}: no ${field}`);
    }
    assert.deepEqual(parsed.event.data, event.data, where);
    assert.equal(event.seq, i + 1, where);
    assert.equal(event.emitter, "00c0ffee");
    assert.equal(event.source, "hosted");
    assert.equal(event.ts, Math.round((T0 + i / 20) * 1e6) / 1e6, where);
    types.add(event.event);

    const d = event.data;
    const key = `${d.user}\0${d.worker}`;
    const session = sessions.get(key);
    if ("user" in d && event.event !== "block_found") assert.ok(knownPairs.has(key), where);
    switch (event.event) {
      case "miner_connected":
        assert.equal(session, undefined, `${where}: already connected`);
        assert.ok(!clientIds.has(d.client_id as number), `${where}: client_id reused`);
        clientIds.add(d.client_id as number);
        sessions.set(key, {
          clientId: d.client_id as number,
          diff: d.initial_diff as number,
          accepted: 0,
        });
        connects++;
        break;
      case "share_submitted":
        assert.ok(session, `${where}: share from a miner that is not connected`);
        assert.equal(d.client_id, session.clientId, where);
        assert.equal(d.diff, session.diff, `${where}: not the miner's current difficulty`);
        assert.equal(d.accepted, d.reject_reason === "", where);
        shares++;
        if (d.accepted) {
          session.accepted++;
          assert.ok((d.sdiff as number) >= (d.diff as number), where);
        } else {
          rejects++;
          rejectReasons.add(d.reject_reason as string);
          if (d.reject_reason === "Above target") {
            assert.ok((d.sdiff as number) < (d.diff as number), where);
          }
        }
        break;
      case "share_best_diff": {
        const share = events[i - 1];
        assert.equal(share.event, "share_submitted", where);
        assert.equal(share.data.accepted, true, where);
        assert.equal(`${share.data.user}\0${share.data.worker}`, key, where);
        assert.equal(d.new_best, share.data.sdiff, where);
        assert.ok((d.new_best as number) > (d.prev_best as number), where);
        assert.equal(d.timeframe, "round");
        break;
      }
      case "diff_updated":
        assert.ok(session, `${where}: retarget of a miner that is not connected`);
        assert.equal(d.client_id, session.clientId, where);
        assert.equal(d.old_diff, session.diff, where);
        assert.notEqual(d.new_diff, d.old_diff, where);
        session.diff = d.new_diff as number;
        break;
      case "hashrate_update":
        assert.ok(session, `${where}: hashrate of a miner that is not connected`);
        assert.ok((d.hashrate_1m as number) > 0, where);
        break;
      case "miner_disconnected":
        assert.ok(session, `${where}: disconnect of a miner that is not connected`);
        assert.equal(d.client_id, session.clientId, where);
        assert.equal(d.shares_session, session.accepted, where);
        assert.ok((d.session_duration as number) > 0, where);
        sessions.delete(key);
        disconnects++;
        break;
      case "new_block_network":
        if (tip) {
          assert.equal(d.height, tip.height + 1, where);
          assert.equal(d.prev_hash, tip.hash, where);
        }
        if (lastBlock) {
          assert.deepEqual({ height: d.height, hash: d.hash }, lastBlock, where);
          lastBlock = undefined;
        }
        tip = { height: d.height as number, hash: d.hash as string };
        break;
      case "block_found":
        assert.ok(session, `${where}: block from a miner that is not connected`);
        assert.ok(tip);
        assert.equal(d.height, tip.height + 1, where);
        assert.ok((d.diff as number) >= (d.network_diff as number), where);
        assert.ok((d.reward_sats as number) > 0, where);
        lastBlock = { height: d.height as number, hash: d.hash as string };
        break;
    }
  });

  assert.deepEqual([...types].sort(), [...DEMO_EVENT_TYPES].sort());
  // The stream opens with the tip and every miner connecting.
  assert.equal(events[0].event, "new_block_network");
  assert.deepEqual(
    events.slice(1, 1 + DEMO_MINERS.length).map((e) => e.event),
    DEMO_MINERS.map(() => "miner_connected"),
  );
  assert.ok(disconnects >= 5 && connects >= DEMO_MINERS.length + disconnects - 1);
  assert.ok(shares > events.length * 0.8, `${shares} shares`);
  assert.ok(rejects > shares * 0.01 && rejects < shares * 0.15, `${rejects} of ${shares}`);
  assert.deepEqual([...rejectReasons].sort(), ["Above target", "Duplicate", "Stale"]);
  assert.ok(events.filter((e) => e.event === "block_found").length >= 3);
});

Deno.test("the demo stream is determined by its seed and clock", () => {
  const a = demoRun(3000);
  const b = demoRun(3000);
  assert.deepEqual(a, b);
  const other = new DemoStream({ seed: 43, emitter: "00c0ffee" });
  const c = Array.from({ length: 3000 }, (_, i) => other.next(T0 + i / 20));
  assert.notDeepEqual(a, c);
});

// ---------------------------------------------------------------------------------------------
// scripts/dev.ts end to end
// ---------------------------------------------------------------------------------------------

interface DevProcess {
  child: Deno.ChildProcess;
  output(): string;
  waitForOutput(pattern: RegExp, timeoutMs?: number): Promise<RegExpExecArray>;
  /** Sends SIGTERM and returns the exit code (SIGKILL after the deadline). */
  stop(timeoutMs?: number): Promise<number>;
}

function spawnDev(env: Record<string, string>, args: string[]): DevProcess {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...devFlags(), "scripts/dev.ts", ...args],
    cwd: ROOT,
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let text = "";
  const drain = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) text += chunk;
  };
  const drained = Promise.all([drain(child.stdout), drain(child.stderr)]);
  let exited = false;
  child.status.then(() => exited = true);
  return {
    child,
    output: () => text,
    waitForOutput: (pattern, timeoutMs = 120_000) =>
      waitFor(() => {
        if (exited && !pattern.test(text)) {
          throw new Error(`dev.ts exited; output:\n${text}`);
        }
        return pattern.exec(text);
      }, { timeoutMs, intervalMs: 50, what: `dev.ts output ${pattern}; output so far:\n${text}` }),
    stop: async (timeoutMs = 90_000) => {
      try {
        child.kill("SIGTERM");
      } catch {
        // already exited
      }
      const timer = setTimeout(() => {
        try {
          child.kill("SIGKILL");
        } catch {
          // exited meanwhile
        }
      }, timeoutMs);
      const status = await child.status;
      clearTimeout(timer);
      await drained;
      return status.code;
    },
  };
}

/** Whether `pid` is a live (not zombie) process whose name contains `name`. */
function processAlive(pid: number, name: string): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    const comm = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
    const state = stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0];
    return state !== "Z" && state !== "X" && comm.includes(name);
  } catch {
    return false;
  }
}

async function canConnect(port: number): Promise<boolean> {
  try {
    (await Deno.connect({ hostname: "127.0.0.1", port })).close();
    return true;
  } catch {
    return false;
  }
}

function serverPids(output: string): { redis: number; postgres: number } {
  const redis = /started redis-server \(pid (\d+)\)/.exec(output);
  const pg = /started postgres \(pid (\d+)\)/.exec(output);
  assert.ok(redis && pg, `no server pids in:\n${output}`);
  return { redis: Number(redis[1]), postgres: Number(pg[1]) };
}

async function counts(redisUrl: string, databaseUrl: string) {
  const redis = createClient({ url: redisUrl });
  redis.on("error", () => {});
  const sql = postgres(databaseUrl, { max: 1, onnotice: () => {}, connect_timeout: 5 });
  try {
    await redis.connect();
    const streamLength = await redis.xLen("mining:share_submitted");
    const [row] = await sql<{ shares: number; workers: number; users: number; id: string }[]>`
      SELECT (SELECT count(*) FROM shares)::int AS shares,
             (SELECT count(*) FROM workers)::int AS workers,
             (SELECT count(*) FROM users)::int AS users,
             (SELECT system_identifier::text FROM pg_control_system()) AS id`;
    return { streamLength, ...row };
  } finally {
    await sql.end();
    if (redis.isOpen) await redis.quit();
  }
}

Deno.test({
  name: "dev.ts runs the whole pipeline, stops what it started, and reuses its data next time",
  sanitizeResources: false,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "tbg-dev-" });
    await Deno.chmod(dir, 0o755); // the postgres user (when we are root) must reach its dir
    const redisPort = freePort();
    let pgPort = freePort();
    while (pgPort === redisPort) pgPort = freePort();
    const env = {
      DEV_DATA_DIR: dir,
      DEV_REDIS_PORT: String(redisPort),
      DEV_PG_PORT: String(pgPort),
      DEV_METRICS_PORT: String(freePort()),
      BATCH_FLUSH_INTERVAL: "0.2",
      LOG_LEVEL: "INFO",
      NO_COLOR: "1",
    };
    const redisUrl = `redis://127.0.0.1:${redisPort}/0`;
    const databaseUrl = `postgres://postgres@127.0.0.1:${pgPort}/thebitcoingame`;
    const runs: DevProcess[] = [];
    const pids: { pid: number; name: string }[] = [];

    const expectStopped = async (run: DevProcess) => {
      const code = await run.stop();
      const output = run.output();
      assert.equal(code, 0, `dev.ts exit code ${code}; output:\n${output}`);
      assert.match(output, /the collector stopped \(exit code 0\)/);
      assert.match(output, /redis-server stopped/);
      assert.match(output, /postgres stopped/);
      const { redis, postgres } = serverPids(output);
      assert.ok(!processAlive(redis, "redis"), "redis-server is still running");
      assert.ok(!processAlive(postgres, "postgres"), "postgres is still running");
      assert.equal(await canConnect(redisPort), false);
      assert.equal(await canConnect(pgPort), false);
    };

    try {
      // First run: a fresh data dir, so initdb; the demo sends 2000 events at 200/s.
      const first = spawnDev(env, ["--rate", "200", "--count", "2000", "--seed", "1"]);
      runs.push(first);
      await first.waitForOutput(/the pipeline is running/);
      const firstPids = serverPids(first.output());
      pids.push({ pid: firstPids.redis, name: "redis" }, {
        pid: firstPids.postgres,
        name: "postgres",
      });
      assert.match(first.output(), /initdb: a new PostgreSQL cluster/);
      assert.match(first.output(), /created database thebitcoingame/);
      assert.match(first.output(), /schema loaded/);
      assert.ok(exists(`${dir}/postgres/data/PG_VERSION`));

      const seen = await waitFor(async () => {
        const c = await counts(redisUrl, databaseUrl);
        return c.streamLength > 0 && c.shares > 0 && c.workers > 0 ? c : undefined;
      }, { timeoutMs: 60_000, intervalMs: 200, what: "shares in Redis and PostgreSQL" });
      await expectStopped(first);

      // Second run, same data dir, no demo: the cluster and the Redis data are reused.
      const second = spawnDev(env, ["--no-demo"]);
      runs.push(second);
      await second.waitForOutput(/the pipeline is running/);
      const secondPids = serverPids(second.output());
      pids.push({ pid: secondPids.redis, name: "redis" }, {
        pid: secondPids.postgres,
        name: "postgres",
      });
      assert.match(second.output(), /reusing the PostgreSQL \d+ cluster/);
      assert.doesNotMatch(second.output(), /initdb:/);
      assert.doesNotMatch(second.output(), /created database/);
      assert.match(second.output(), /schema loaded/); // loaded again: it is idempotent
      const again = await counts(redisUrl, databaseUrl);
      assert.equal(again.id, seen.id, "a different PostgreSQL cluster");
      assert.ok(again.shares >= seen.shares, `shares ${again.shares} < ${seen.shares}`);
      assert.ok(again.workers >= seen.workers);
      assert.ok(again.streamLength >= seen.streamLength, "the Redis stream was not kept");
      await expectStopped(second);
    } finally {
      for (const run of runs) {
        try {
          run.child.kill("SIGKILL");
        } catch {
          // exited
        }
        await run.child.status;
      }
      for (const { pid, name } of pids) {
        if (processAlive(pid, name)) Deno.kill(pid, "SIGKILL");
      }
      await Deno.remove(dir, { recursive: true });
    }
  },
});

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

Deno.test({
  name: "one Ctrl-C in a terminal stops `deno task dev` cleanly; a second one later kills",
  sanitizeResources: false,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "tbg-dev-tty-" });
    await Deno.chmod(dir, 0o755);
    const env = {
      DEV_DATA_DIR: dir,
      DEV_REDIS_PORT: String(freePort()),
      DEV_PG_PORT: String(freePort()),
      DEV_METRICS_PORT: String(freePort()),
      LOG_LEVEL: "INFO",
      NO_COLOR: "1",
      TERM: "dumb",
    };
    // `script` runs the task on a pseudo-terminal of its own, in the terminal's foreground
    // process group, and copies what we write to it as typed keys: a ^C there is the line
    // discipline's SIGINT to the whole group, exactly as a person's Ctrl-C. `exec`, because
    // `script` runs the command through $SHELL, and a shell that stays (dash does) dies of
    // that SIGINT itself and reports 130 whatever the task did.
    const run = () =>
      new Deno.Command("script", {
        args: ["-qfec", `exec ${Deno.execPath()} task dev --rate 100`, "/dev/null"],
        cwd: ROOT,
        env,
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
    const press = async (child: Deno.ChildProcess) => {
      const writer = child.stdin.getWriter();
      await writer.write(new Uint8Array([3])); // Ctrl-C
      writer.releaseLock();
    };
    const session = () => {
      const child = run();
      let text = "";
      const drained = Promise.all([child.stdout, child.stderr].map(async (stream) => {
        for await (const chunk of stream.pipeThrough(new TextDecoderStream())) text += chunk;
      }));
      const exit = child.status;
      let exited = false;
      void exit.then(() => exited = true);
      const waitForText = (pattern: RegExp) =>
        waitFor(() => {
          if (exited && !pattern.test(text)) throw new Error(`exited; output:\n${text}`);
          return pattern.test(text);
        }, { timeoutMs: 120_000, intervalMs: 50, what: `${pattern}; output so far:\n${text}` });
      return { child, exit, drained, text: () => text, waitForText };
    };

    try {
      const first = session();
      await first.waitForText(/the pipeline is running/);
      await press(first.child);
      const status = await first.exit;
      await first.child.stdin.close().catch(() => {});
      await first.drained;
      const output = first.text();
      assert.equal(status.code, 0, `exit code ${status.code}; output:\n${output}`);
      assert.equal(output.match(/SIGINT: stopping/g)?.length, 1, output);
      assert.doesNotMatch(output, /again: killing everything|stopped with errors/);
      assert.match(output, /the collector stopped \(exit code 0\)/);
      assert.match(output, /redis-server stopped/);
      assert.match(output, /postgres stopped/);
      assert.match(output, /stopped; data kept in/);

      // A second press a moment after the first still kills: the way out of a stop that
      // hangs, here because redis-server is frozen and never finishes its shutdown.
      const second = session();
      await second.waitForText(/the pipeline is running/);
      const { redis } = serverPids(second.text());
      Deno.kill(redis, "SIGSTOP");
      await press(second.child);
      await second.waitForText(/SIGINT: stopping/);
      await new Promise((resolve) => setTimeout(resolve, 700)); // a person's second press
      await press(second.child);
      const killedStatus = await second.exit;
      await second.child.stdin.close().catch(() => {});
      await second.drained;
      const killed = second.text();
      assert.equal(killed.match(/SIGINT: stopping/g)?.length, 1, killed);
      assert.match(killed, /SIGINT again: killing everything/);
      assert.notEqual(killedStatus.code, 0, killed);
      await waitFor(() => !processAlive(redis, "redis"), { what: "redis-server killed" });
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

/**
 * Socket activation end to end: a holder keeps the socket the way systemd does
 * (`support/socket_holder.c`) and restarts the collector whenever it exits. A steady stream
 * runs while the collector is killed with SIGKILL twice; every event the socket took is then
 * in PostgreSQL exactly once and in Redis at least once, because the socket (and its queue)
 * outlives each process and the receive thread takes a datagram off it only once spooled.
 */
import assert from "node:assert/strict";
import postgres from "postgres";
import { DatagramSender } from "../ffi/unix_datagram.ts";
import { RespConnection } from "../src/sinks/redis/resp.ts";
import { startTaskArgs } from "./support/collector_process.ts";
import { compileC } from "./support/compile_c.ts";
import { loadSchema, startPostgres, startRedis } from "./support/services.ts";
import { waitFor } from "./support/wait.ts";

const root = new URL("../", import.meta.url).pathname;
const EMITTER = "00000000feedbeef";
const TOTAL = 6_000;
const KILL_AT = [1_500, 3_500];
const encoder = new TextEncoder();

function share(seq: number): Uint8Array<ArrayBuffer> {
  return encoder.encode(JSON.stringify({
    event: "share_submitted",
    ts: 1_767_225_600 + seq / 1000,
    source: "hosted",
    seq,
    emitter: EMITTER,
    data: {
      user: `tb1quser${seq % 50}`,
      worker: `w${seq % 7}`,
      sdiff: seq,
      diff: 1,
      accepted: true,
    },
  }));
}

/** The holder with the collector under it, and what they printed. */
function startHolder(holder: string, socket: string, env: Record<string, string>) {
  const child = new Deno.Command(holder, {
    args: [socket, Deno.execPath(), ...startTaskArgs()],
    cwd: root,
    env: { STATS_INTERVAL: "0", METRICS_PORT: "0", LOG_LEVEL: "INFO", ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let text = "";
  const drained = Promise.all([child.stdout, child.stderr].map(async (stream) => {
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) text += chunk;
  }));
  const started = () => [...text.matchAll(/^holder: started (\d+)$/gm)].map((m) => Number(m[1]));
  return { child, drained, output: () => text, started };
}

Deno.test("socket activation: SIGKILL twice mid-stream, every event once in PostgreSQL, at least once in Redis", async () => {
  const holderBinary = await compileC(
    new URL("./support/socket_holder.c", import.meta.url),
    [],
    "gcc (apt-get install -y gcc)",
  );
  const [redis, pg, dir] = await Promise.all([
    startRedis({ appendOnly: true }),
    startPostgres({ crashSafe: true }),
    Deno.makeTempDir({ prefix: "tbg-activation-" }),
  ]);
  const sql = postgres(pg.url, { onnotice: () => {}, max: 1 });
  const socket = `${dir}/events.sock`;
  let holder: ReturnType<typeof startHolder> | undefined;
  try {
    await loadSchema(pg);
    holder = startHolder(holderBinary, socket, {
      REDIS_URL: redis.url,
      DATABASE_URL: pg.url,
      SPOOL_DIR: `${dir}/spool`,
      BATCH_FLUSH_INTERVAL: "0.1",
    });
    const h = holder;
    await waitFor(() => /listening on .* \(passed in by the service manager/.test(h.output()), {
      what: `the collector to take the held socket; output:\n${h.output()}`,
      timeoutMs: 60_000,
    });
    const sender = new DatagramSender(socket);
    const kills: number[] = [];
    const startedAt = performance.now();
    try {
      for (let seq = 1; seq <= TOTAL; seq++) {
        if (KILL_AT.includes(seq)) {
          const pid = h.started().at(-1)!;
          Deno.kill(pid, "SIGKILL");
          kills.push(pid);
        }
        const bytes = share(seq);
        // While no collector runs, the queue fills and the send waits: the socket took it
        // only when this returns.
        await waitFor(() => sender.send(bytes), {
          what: `the socket to take ${seq}`,
          intervalMs: 1,
          timeoutMs: 60_000,
        });
        if (seq % 20 === 0) await new Promise((resolve) => setTimeout(resolve, 5));
      }
    } finally {
      sender.close();
    }
    const sendSeconds = (performance.now() - startedAt) / 1000;
    await waitFor(async () => {
      const [{ n }] = await sql<{ n: number }[]>`
        select count(distinct seq)::int as n from mining_events where emitter = ${EMITTER}`;
      return n === TOTAL;
    }, { what: `${TOTAL} events in PostgreSQL; output:\n${h.output()}`, timeoutMs: 120_000 });
    const [{ rows, distinct, shares }] = await sql<
      { rows: number; distinct: number; shares: number }[]
    >`select count(*)::int as rows, count(distinct seq)::int as distinct,
        (select count(*)::int from shares where emitter = ${EMITTER}) as shares
      from mining_events where emitter = ${EMITTER}`;
    assert.deepEqual({ rows, distinct, shares }, { rows: TOTAL, distinct: TOTAL, shares: TOTAL });

    const connection = await RespConnection.connect(redis.url);
    let inRedis = new Set<string>();
    try {
      await waitFor(async () => {
        const [entries] = await connection.pipeline([
          ["XRANGE", "mining:share_submitted", "-", "+"],
        ]);
        inRedis = new Set(
          (entries as [string, string[]][]).map(([, fields]) => fields[fields.indexOf("id") + 1]),
        );
        return inRedis.size === TOTAL;
      }, { what: `${TOTAL} distinct events in Redis`, timeoutMs: 60_000 });
    } finally {
      connection.close();
    }
    for (let seq = 1; seq <= TOTAL; seq++) assert.ok(inRedis.has(`${EMITTER}:${seq}`), `${seq}`);
    assert.equal(h.started().length, 3, "started once and restarted after each SIGKILL");
    assert.doesNotMatch(h.output(), /another process is receiving/);
    console.log(
      `${TOTAL} sent in ${sendSeconds.toFixed(1)} s with SIGKILL at seq ${
        KILL_AT.join(" and ")
      }: ` +
        `all ${TOTAL} once in PostgreSQL and in Redis`,
    );

    // A stop by SIGTERM leaves the socket where it is: what is sent meanwhile waits in it.
    const last = h.started().at(-1)!;
    Deno.kill(last, "SIGTERM");
    await waitFor(() => new RegExp(`^holder: exited ${last} 0$`, "m").test(h.output()), {
      what: "the collector to stop cleanly",
      timeoutMs: 60_000,
    });
    assert.ok(Deno.lstatSync(socket).isSocket, "the socket file is still there");
  } catch (error) {
    console.error(holder?.output());
    throw error;
  } finally {
    if (holder) {
      try {
        holder.child.kill("SIGTERM");
      } catch {
        // gone already
      }
      await holder.child.status;
      await holder.drained;
    }
    await sql.end({ timeout: 1 });
    await Promise.all([redis.stop(), pg.stop(), Deno.remove(dir, { recursive: true })]);
  }
});

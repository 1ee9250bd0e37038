/**
 * `/metrics`, `/healthz` and `healthcheck` of the collector as an operator runs it: a child
 * process with real redis-server and postgres.
 */
import assert from "node:assert/strict";
import { DatagramSender } from "../ffi/unix_datagram.ts";
import { spawnCollector } from "./support/collector_process.ts";
import { parsePrometheusText, sampleValue } from "./support/prometheus_text.ts";
import { freePort, loadSchema, startPostgres, startRedis } from "./support/services.ts";
import { waitFor } from "./support/wait.ts";

const root = new URL("../", import.meta.url).pathname;

async function send(sender: DatagramSender, text: string): Promise<void> {
  const bytes = new TextEncoder().encode(text);
  await waitFor(() => sender.send(bytes), { what: "the socket to take a datagram", intervalMs: 1 });
}

function share(seq: number): string {
  return JSON.stringify({
    event: "share_submitted",
    ts: 1_767_225_600 + seq,
    source: "hosted",
    seq,
    emitter: "beef",
    data: { user: "tb1qexample", worker: "w", sdiff: 1, accepted: true },
  });
}

Deno.test("a running collector serves its counters and health, and the port it holds stops a second one", async () => {
  const [redis, pg, dir] = await Promise.all([
    startRedis(),
    startPostgres(),
    Deno.makeTempDir({ prefix: "tbg-metrics-" }),
  ]);
  const port = freePort();
  const env = {
    SOCKET_PATH: `${dir}/events.sock`,
    SPOOL_DIR: `${dir}/spool`,
    REDIS_URL: redis.url,
    DATABASE_URL: pg.url,
    BATCH_FLUSH_INTERVAL: "0.1",
    METRICS_HOST: "127.0.0.1",
    METRICS_PORT: String(port),
    STATS_INTERVAL: "0.2",
  };
  const base = `http://127.0.0.1:${port}`;
  const collector = spawnCollector(env);
  try {
    await loadSchema(pg);
    await collector.waitForOutput(/listening on/);
    const sender = new DatagramSender(env.SOCKET_PATH);
    for (let seq = 1; seq <= 20; seq++) await send(sender, share(seq));
    await send(sender, "not json");
    await send(sender, share(25)); // 21-24 never sent: lost

    const scrape = async () => parsePrometheusText(await (await fetch(`${base}/metrics`)).text());
    const written = (m: Awaited<ReturnType<typeof scrape>>, sink: string) =>
      sampleValue(m, "tbg_collector_sink_events_total", { sink, outcome: "written" });
    const accepted = (m: Awaited<ReturnType<typeof scrape>>) =>
      sampleValue(m, "tbg_collector_events_total", {
        type: "share_submitted",
        outcome: "accepted",
      });
    let m = await scrape();
    // Each sink's thread reports its counts (the PostgreSQL one the centre's too) on its own.
    await waitFor(async () => {
      m = await scrape();
      return written(m, "postgres") === 21 && written(m, "redis") === 21 && accepted(m) === 21;
    }, { what: "both sinks to confirm, and the centre to count, every event" });
    assert.equal(sampleValue(m, "tbg_collector_datagrams_received_total"), 22);
    assert.equal(
      sampleValue(m, "tbg_collector_events_total", {
        type: "share_submitted",
        outcome: "accepted",
      }),
      21,
    );
    assert.equal(
      sampleValue(m, "tbg_collector_datagrams_rejected_total", { reason: "not_json" }),
      1,
    );
    assert.equal(sampleValue(m, "tbg_collector_events_lost_total"), 4);
    assert.ok(sampleValue(m, "tbg_collector_sink_write_seconds_count", { sink: "postgres" })! >= 1);
    assert.equal(sampleValue(m, "tbg_collector_spool_max_bytes"), 1024 * 1024 * 1024);

    const health = await fetch(`${base}/healthz`);
    assert.equal(health.status, 200);
    assert.deepEqual((await health.json()).receiver, { bound: true });
    const check = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-env", "--allow-net", "--allow-read", "main.ts", "healthcheck"],
      cwd: root,
      env: { METRICS_PORT: String(port), METRICS_HOST: "127.0.0.1" },
      stdout: "null",
      stderr: "null",
    }).output();
    assert.equal(check.code, 0);

    // Redis away: the spool keeps its events, so the collector stays healthy and says so.
    await redis.kill();
    await send(sender, share(26));
    await waitFor(
      async () => sampleValue(await scrape(), "tbg_collector_sink_up", { sink: "redis" }) === 0,
      {
        what: "the redis sink to report it is down",
      },
    );
    const away = await fetch(`${base}/healthz`);
    assert.equal(away.status, 200);
    const body = await away.json();
    assert.equal(body.sinks.redis.up, false);
    assert.equal(body.sinks.redis.spooling, true);
    // The stats line says so too, and says when it is back.
    const newOutput = (from: number) => () => collector.output().slice(from);
    const down = newOutput(collector.output().length);
    await waitFor(() => /redis: DOWN written=/.test(down()), { what: "redis: DOWN in stats" });
    await redis.start();
    const back = newOutput(collector.output().length);
    await waitFor(() => /redis: up written=/.test(back()), { what: "redis: up in stats" });
    sender.close();

    const second = spawnCollector({
      ...env,
      SOCKET_PATH: `${dir}/second.sock`,
      SPOOL_DIR: `${dir}/s2`,
    });
    assert.equal(await second.exitCode(), 2);
    assert.match(second.output(), new RegExp(`127\\.0\\.0\\.1:${port} \\(METRICS_PORT\\)`));

    assert.equal(await collector.stop("SIGTERM"), 0);
    await assert.rejects(fetch(`${base}/healthz`), "the server stops with the collector");
  } finally {
    await collector.stop("SIGKILL");
    await Promise.all([redis.stop(), pg.stop()]);
    await Deno.remove(dir, { recursive: true });
  }
});

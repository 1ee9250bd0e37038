/**
 * What Prometheus makes of the collector: `/metrics` of a running collector (real Redis and
 * PostgreSQL, traffic of every outcome) passes `promtool check metrics`, and the shipped alert
 * rules pass `promtool check rules` and their unit tests (`promtool test rules`). Skipped, with
 * one line saying so, where promtool is missing (Debian: `apt-get install prometheus`).
 */
import assert from "node:assert/strict";
import { DatagramSender } from "../ffi/unix_datagram.ts";
import { spawnCollector } from "./support/collector_process.ts";
import { freePort, loadSchema, startPostgres, startRedis } from "./support/services.ts";
import { waitFor } from "./support/wait.ts";

const RULES_DIR = new URL("../deploy/prometheus/", import.meta.url).pathname;

function promtoolInstalled(): boolean {
  try {
    return new Deno.Command("promtool", { args: ["--version"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

const installed = promtoolInstalled();
if (!installed) {
  console.log("skipped: the promtool tests need promtool: apt-get install prometheus");
}

/** Runs promtool with `args` (and `input` on stdin); returns its exit code and output. */
async function promtool(args: string[], input?: string, cwd?: string) {
  const child = new Deno.Command("promtool", {
    args,
    cwd,
    stdin: input === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (input !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(input));
    await writer.close();
  }
  const out = await child.output();
  const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
  return { code: out.code, output: decode(out.stdout) + decode(out.stderr) };
}

Deno.test({
  name: "promtool check metrics accepts /metrics of a running collector",
  ignore: !installed,
  fn: async () => {
    const [redis, pg, dir] = await Promise.all([
      startRedis(),
      startPostgres(),
      Deno.makeTempDir({ prefix: "tbg-prom-" }),
    ]);
    await loadSchema(pg);
    const port = freePort();
    const collector = spawnCollector({
      SOCKET_PATH: `${dir}/events.sock`,
      SPOOL_DIR: `${dir}/spool`,
      REDIS_URL: redis.url,
      DATABASE_URL: pg.url,
      BATCH_FLUSH_INTERVAL: "0.05",
      METRICS_HOST: "127.0.0.1",
      METRICS_PORT: String(port),
    });
    try {
      await collector.waitForOutput(/listening on/);
      const sender = new DatagramSender(`${dir}/events.sock`);
      const encoder = new TextEncoder();
      // The kernel queue may be as short as 10: a datagram it refuses is sent again.
      const send = (text: string) =>
        waitFor(() => sender.send(encoder.encode(text)), { what: "the socket to take a datagram" });
      for (let seq = 1; seq <= 30; seq++) {
        if (seq === 10) continue; // a gap: lost
        await send(JSON.stringify({
          event: seq % 7 === 0 ? "miner_connected" : "share_submitted",
          ts: Date.now() / 1000,
          source: "hosted",
          seq,
          emitter: "0f0f0f0f0f0f0f0f",
          data: { user: "tb1qpromtool", worker: "rig", diff: 1, sdiff: seq, accepted: true },
        }));
      }
      await send("not json");
      sender.close();
      const metrics = await waitFor(async () => {
        const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
        return /tbg_collector_sink_events_total\{sink="postgres",outcome="written"\} 29/.test(text)
          ? text
          : undefined;
      }, { what: "both sinks to write every event" });

      const checked = await promtool(["check", "metrics"], metrics);
      assert.equal(checked.code, 0, `promtool check metrics:\n${checked.output}`);
      assert.equal(checked.output.trim(), "", `promtool has remarks:\n${checked.output}`);
      assert.match(metrics, /tbg_collector_sink_write_seconds_bucket\{sink="redis",le="\+Inf"\}/);
    } finally {
      await collector.stop("SIGTERM");
      await Promise.all([redis.stop(), pg.stop()]);
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "the alert rules pass promtool check rules and their unit tests",
  ignore: !installed,
  fn: async () => {
    const checked = await promtool(
      ["check", "rules", "tbg-collector-alerts.yml"],
      undefined,
      RULES_DIR,
    );
    assert.equal(checked.code, 0, checked.output);
    assert.match(checked.output, /SUCCESS: 9 rules found/);
    const tested = await promtool(
      ["test", "rules", "tbg-collector-alerts.test.yml"],
      undefined,
      RULES_DIR,
    );
    assert.equal(tested.code, 0, tested.output);
    assert.match(tested.output, /SUCCESS/);
  },
});

Deno.test({
  name: "every alert rule has a unit test, and every metric it names is one the collector exports",
  ignore: !installed,
  fn: () => {
    const rules = Deno.readTextFileSync(`${RULES_DIR}tbg-collector-alerts.yml`);
    const tests = Deno.readTextFileSync(`${RULES_DIR}tbg-collector-alerts.test.yml`);
    const alerts = [...rules.matchAll(/- alert: (\w+)/g)].map((m) => m[1]);
    assert.equal(alerts.length, 9);
    for (const alert of alerts) {
      assert.match(tests, new RegExp(`alertname: ${alert}\\n`), `${alert} has no unit test`);
    }
    const exported = Deno.readTextFileSync(
      new URL("../src/ops/service_metrics.ts", import.meta.url),
    );
    for (const [, name] of rules.matchAll(/tbg_collector_(\w+)/g)) {
      assert.ok(exported.includes(`\${PREFIX}${name}\``), `the collector exports no ${name}`);
    }
  },
});

import assert from "node:assert/strict";
import { ConfigError, loadConfig, redactUrl, VARIABLES } from "../src/ops/config.ts";

function problemsOf(env: Record<string, string>): readonly string[] {
  try {
    loadConfig(env);
  } catch (error) {
    assert.ok(error instanceof ConfigError);
    return error.problems;
  }
  assert.fail("expected a ConfigError");
}

Deno.test("defaults match the documented ones", () => {
  const config = loadConfig({});
  assert.equal(config.socketPath, "/tmp/ckpool/events.sock");
  assert.equal(config.socketMode, 0o660);
  assert.equal(config.redisUrl, "redis://localhost:6379/0");
  assert.equal(config.databaseUrl, "postgresql://tbg:tbgdev2026@localhost:5432/thebitcoingame");
  assert.equal(config.logLevel, "info");
  assert.equal(config.batchFlushIntervalMs, 1000);
  assert.equal(config.batchMaxSize, 500);
  assert.equal(config.redisStreamMaxLen, 100_000);
  assert.equal(config.statsIntervalMs, 60_000);
  assert.ok(Object.isFrozen(config));
});

Deno.test("values are read from the environment; empty means default", () => {
  const config = loadConfig({
    SOCKET_PATH: "/run/tbg/events.sock",
    SOCKET_MODE: "600",
    REDIS_URL: "rediss://:secret@redis:6380/2",
    DATABASE_URL: "postgres://u:p@db/x",
    LOG_LEVEL: "debug",
    BATCH_FLUSH_INTERVAL: "0.25",
    BATCH_MAX_SIZE: "2000",
    REDIS_STREAM_MAXLEN: "5000",
    SINK_MEMORY_BYTES: "8388608",
    STATS_INTERVAL: "0",
    SHUTDOWN_TIMEOUT: "5",
    SOCKET_RCVBUF: "",
  });
  assert.equal(config.socketPath, "/run/tbg/events.sock");
  assert.equal(config.socketMode, 0o600);
  assert.equal(config.logLevel, "debug");
  assert.equal(config.batchFlushIntervalMs, 250);
  assert.equal(config.batchMaxSize, 2000);
  assert.equal(config.redisStreamMaxLen, 5000);
  assert.equal(config.sinkMemoryBytes, 8 * 1024 * 1024);
  assert.equal(config.statsIntervalMs, 0);
  assert.equal(config.shutdownTimeoutMs, 5000);
  assert.equal(config.socketReceiveBuffer, 8 * 1024 * 1024);
});

Deno.test("LOG_LEVEL accepts the usual spellings", () => {
  assert.equal(loadConfig({ LOG_LEVEL: "WARN" }).logLevel, "warning");
  assert.equal(loadConfig({ LOG_LEVEL: "Warning" }).logLevel, "warning");
  assert.equal(loadConfig({ LOG_LEVEL: "ERROR" }).logLevel, "error");
});

const invalid: Array<[string, string]> = [
  ["SOCKET_PATH", "relative/events.sock"],
  ["SOCKET_PATH", "/" + "a".repeat(120)],
  ["SOCKET_MODE", "rw-rw----"],
  ["SOCKET_MODE", "0999"],
  ["SOCKET_RCVBUF", "12"],
  ["REDIS_URL", "localhost:6379"],
  ["REDIS_URL", "http://localhost:6379"],
  ["DATABASE_URL", "mysql://localhost/db"],
  ["DATABASE_URL", "not a url"],
  ["LOG_LEVEL", "verbose"],
  ["BATCH_FLUSH_INTERVAL", "0"],
  ["BATCH_FLUSH_INTERVAL", "-1"],
  ["BATCH_FLUSH_INTERVAL", "soon"],
  ["BATCH_FLUSH_INTERVAL", "Infinity"],
  ["BATCH_MAX_SIZE", "1.5"],
  ["BATCH_MAX_SIZE", "0"],
  ["BATCH_MAX_SIZE", "1e9"],
  ["BATCH_MAX_SIZE", " "],
  ["REDIS_STREAM_MAXLEN", "-5"],
  ["SINK_MEMORY_BYTES", "1000"],
  ["STATS_INTERVAL", "-1"],
  ["SHUTDOWN_TIMEOUT", "NaN"],
];

for (const [name, value] of invalid) {
  Deno.test(`${name}=${JSON.stringify(value.slice(0, 20))} is refused, naming the variable`, () => {
    const problems = problemsOf({ [name]: value });
    assert.equal(problems.length, 1);
    assert.ok(problems[0].startsWith(`${name} `), problems[0]);
    assert.ok(problems[0].includes(JSON.stringify(value)), problems[0]);
  });
}

Deno.test("every invalid variable is reported at once", () => {
  const problems = problemsOf({ BATCH_MAX_SIZE: "x", LOG_LEVEL: "y", REDIS_URL: "z" });
  assert.deepEqual(problems.map((p) => p.split(" ")[0]).sort(), [
    "BATCH_MAX_SIZE",
    "LOG_LEVEL",
    "REDIS_URL",
  ]);
});

Deno.test("every documented default parses", () => {
  for (const [name, variable] of Object.entries(VARIABLES)) {
    assert.doesNotThrow(() => variable.parse(variable.fallback), name);
  }
});

Deno.test("redactUrl hides passwords only", () => {
  assert.equal(redactUrl("postgres://tbg:hunter2@db:5432/x"), "postgres://tbg:***@db:5432/x");
  assert.equal(redactUrl("redis://localhost:6379/0"), "redis://localhost:6379/0");
});

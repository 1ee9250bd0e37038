/**
 * The stack cannot start here (no Docker engine), so this proves what can be proved: a real
 * compose implementation accepts compose.yaml with .env.example, and what each service
 * expects of another (volumes, ports, credentials, health checks, start order) lines up.
 */
import assert from "node:assert/strict";
import { parse } from "yaml";

const root = new URL("../", import.meta.url).pathname;
const compose = parse(Deno.readTextFileSync(`${root}compose.yaml`));
const services = compose.services as Record<string, Record<string, unknown>>;
const env = Object.fromEntries(
  Deno.readTextFileSync(`${root}.env.example`).split("\n")
    .filter((line) => /^[A-Z_]+=/.test(line))
    .map((line) => line.split(/=(.*)/s, 2) as [string, string]),
);
const ckpoolConfig = JSON.parse(Deno.readTextFileSync(`${root}ckpool/config/ckpool-signet.conf`));

/** Replaces ${VAR}, ${VAR:-default} and ${VAR:?message} with values from .env.example. */
function interpolate(text: string): string {
  return text.replace(
    /\$\{([A-Z_]+)(?::([-?])([^}]*))?\}/g,
    (_, name, kind, fallback) => env[name] ?? (kind === "-" ? fallback : ""),
  );
}

function environment(service: string): Record<string, string> {
  const raw = (services[service].environment ?? {}) as Record<string, string>;
  return Object.fromEntries(Object.entries(raw).map(([k, v]) => [k, interpolate(String(v))]));
}

function mounts(service: string): Array<[string, string]> {
  return ((services[service].volumes ?? []) as string[]).map((spec) => {
    const [source, target] = spec.split(":");
    return [source, target];
  });
}

function dirname(path: string): string {
  return path.slice(0, path.lastIndexOf("/"));
}

Deno.test("docker-compose accepts compose.yaml with .env.example", async () => {
  let output: Deno.CommandOutput;
  try {
    output = await new Deno.Command("docker-compose", {
      args: ["-f", "compose.yaml", "--env-file", ".env.example", "config", "--quiet"],
      cwd: root,
      stdout: "piped",
      stderr: "piped",
    }).output();
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new Error("docker-compose is not installed: apt-get install -y docker-compose");
    }
    throw error;
  }
  assert.ok(output.success, new TextDecoder().decode(output.stderr));
});

Deno.test("every service's image is pinned to a version", () => {
  for (const [name, service] of Object.entries(services)) {
    if (service.build) continue;
    const image = String(service.image);
    assert.match(image, /:[^:]*\d[^:]*$/, `${name} uses ${image}`);
    assert.doesNotMatch(image, /:latest/, name);
  }
});

Deno.test("the seven volumes are declared and used, the socket volume by ckpool and the collector at one path", () => {
  const declared = Object.keys(compose.volumes).sort();
  assert.deepEqual(declared, [
    "bitcoin-signet-data",
    "ckpool-events",
    "ckpool-logs",
    "ckpool-run",
    "collector-spool",
    "redis-data",
    "timescaledb-data",
  ]);
  const used = new Set(
    Object.keys(services).flatMap((name) => mounts(name).map(([source]) => source)),
  );
  for (const volume of declared) assert.ok(used.has(volume), `${volume} is not mounted`);
  for (const name of Object.keys(services)) {
    for (const [source] of mounts(name)) {
      assert.ok(source.startsWith("./") || declared.includes(source), `${name}: ${source}`);
    }
  }
  const socketDir = dirname(environment("event-collector").SOCKET_PATH);
  const mountedAt = (service: string) =>
    mounts(service).find(([source]) => source === "ckpool-events")?.[1];
  assert.equal(mountedAt("event-collector"), socketDir);
  assert.equal(mountedAt("ckpool"), socketDir);
  assert.equal(dirname(ckpoolConfig.event_socket_path), socketDir);
  assert.equal(ckpoolConfig.event_socket_path, environment("event-collector").SOCKET_PATH);
});

Deno.test("the collector reaches redis and the database with the database's own credentials", () => {
  const collector = environment("event-collector");
  const redis = new URL(collector.REDIS_URL);
  assert.equal(redis.hostname, "redis");
  assert.equal(redis.port, "6379");
  assert.ok(
    (services.redis.ports as string[]).some((port) => port.endsWith(":6379")),
    "redis publishes 6379",
  );
  const db = new URL(collector.DATABASE_URL);
  const timescale = environment("timescaledb");
  assert.equal(db.hostname, "timescaledb");
  assert.equal(db.port, "5432");
  assert.equal(decodeURIComponent(db.username), timescale.POSTGRES_USER);
  assert.equal(decodeURIComponent(db.password), timescale.POSTGRES_PASSWORD);
  assert.equal(db.pathname.slice(1), timescale.POSTGRES_DB);
  assert.ok(
    mounts("timescaledb").some(([source, target]) =>
      source === "./sql/init.sql" && target.startsWith("/docker-entrypoint-initdb.d/")
    ),
    "init.sql is mounted into the init directory",
  );
});

Deno.test("ckpool mines solo against bitcoin-signet's RPC and ZMQ ports", () => {
  const command = services.ckpool.command as string[];
  assert.ok(command.includes("-B"), "solo mode is -B");
  assert.ok(!command.includes("-S"), "-S is not a solo flag");
  const bitcoind = (services["bitcoin-signet"].command as string[]).map(interpolate);
  assert.ok(bitcoind.includes("-signet"));
  const [host, port] = String(ckpoolConfig.btcd[0].url).split(":");
  assert.equal(host, "bitcoin-signet");
  assert.ok(bitcoind.includes(`-rpcport=${port}`));
  const zmq = new URL(ckpoolConfig.zmqblock.replace("tcp:", "http:"));
  assert.equal(zmq.hostname, "bitcoin-signet");
  assert.ok(bitcoind.includes(`-zmqpubhashblock=tcp://0.0.0.0:${zmq.port}`));
  // The ckpool image's entrypoint fills the config's placeholders from its environment.
  const ckpoolEnv = environment("ckpool");
  assert.equal(ckpoolConfig.btcd[0].auth, "${BITCOIN_RPC_USER}");
  assert.equal(ckpoolConfig.btcd[0].pass, "${BITCOIN_RPC_PASSWORD}");
  assert.ok(bitcoind.includes(`-rpcuser=${ckpoolEnv.BITCOIN_RPC_USER}`));
  assert.ok(bitcoind.includes(`-rpcpassword=${ckpoolEnv.BITCOIN_RPC_PASSWORD}`));
  assert.ok((services.ckpool.ports as string[]).includes("3333:3333"));
  assert.ok(ckpoolConfig.serverurl.some((url: string) => url.endsWith(":3333")));
});

Deno.test("start order: every awaited service has a health check", () => {
  const dependsOn = (name: string) =>
    (services[name].depends_on ?? {}) as Record<string, { condition: string }>;
  assert.deepEqual(Object.keys(dependsOn("event-collector")).sort(), ["redis", "timescaledb"]);
  assert.deepEqual(Object.keys(dependsOn("ckpool")).sort(), ["bitcoin-signet", "event-collector"]);
  for (const name of Object.keys(services)) {
    for (const [target, { condition }] of Object.entries(dependsOn(name))) {
      assert.equal(condition, "service_healthy", `${name} -> ${target}`);
      assert.ok(services[target].healthcheck, `${target} has no health check`);
    }
  }
});

Deno.test("the collector's health check asks its own /healthz through the binary the image installs", () => {
  const collector = services["event-collector"];
  const check = collector.healthcheck as { test: string[]; timeout: string; interval: string };
  assert.deepEqual(check.test, ["CMD", "/usr/local/bin/tbg-collector", "healthcheck"]);
  const dockerfile = Deno.readTextFileSync(`${root}Dockerfile`);
  assert.match(dockerfile, /^COPY --from=build \S+ \/usr\/local\/bin\/tbg-collector$/m);
  // The check reads METRICS_PORT from the same environment; 0 would turn /healthz off.
  const port = Number(environment("event-collector").METRICS_PORT);
  assert.ok(port > 0 && port < 65536, `METRICS_PORT ${port}`);
  // Published, if at all, on loopback only.
  for (const mapping of (collector.ports ?? []) as string[]) {
    assert.match(mapping, new RegExp(`^127\\.0\\.0\\.1:\\d+:${port}$`));
  }
  // The probe gives up (3 s) before the engine kills it, so the reason reaches the log.
  assert.ok(Number(check.timeout.replace("s", "")) > 3);
});

Deno.test("the collector's spool is on its own volume, in a directory the image gives the collector", () => {
  const spoolDir = environment("event-collector").SPOOL_DIR;
  assert.equal(
    mounts("event-collector").find(([source]) => source === "collector-spool")?.[1],
    spoolDir,
  );
  for (const name of Object.keys(services)) {
    if (name === "event-collector") continue;
    assert.ok(!mounts(name).some(([source]) => source === "collector-spool"), name);
  }
  const dockerfile = Deno.readTextFileSync(`${root}Dockerfile`);
  const [, runs] = /^FROM debian:bookworm-slim\n([\s\S]*?)^USER /m.exec(
    dockerfile.slice(dockerfile.lastIndexOf("FROM ")),
  )!;
  assert.match(runs, new RegExp(`mkdir -p ${spoolDir}`));
  assert.match(runs, /chown -R collector:\S+ \/var\/lib\/tbg-collector/);
  assert.match(dockerfile, /useradd [^\n]*--uid 10001/);
  assert.equal(String(services["event-collector"].user).split(":")[0], "10001");
});

Deno.test("the collector's kernel queue is raised and its stop outlasts the flush timeout", () => {
  const sysctls = services["event-collector"].sysctls as Record<string, number>;
  assert.ok(sysctls["net.unix.max_dgram_qlen"] >= 1024);
  const grace = Number(String(services["event-collector"].stop_grace_period).replace("s", ""));
  assert.ok(grace > Number(environment("event-collector").SHUTDOWN_TIMEOUT));
});

Deno.test("credentials come from .env: compose.yaml holds no literal password", () => {
  const text = Deno.readTextFileSync(`${root}compose.yaml`);
  for (const name of ["BITCOIN_RPC_PASSWORD", "POSTGRES_PASSWORD"]) {
    assert.ok(env[name], `${name} is in .env.example`);
    assert.ok(!text.includes(env[name]), `${name}'s value is written into compose.yaml`);
  }
  for (const match of text.matchAll(/\$\{([A-Z_]+)/g)) {
    assert.ok(match[1] in env, `${match[1]} is used but not in .env.example`);
  }
});

Deno.test("ckpool has a health check of its own: ping on its control socket, mining.subscribe on 3333", () => {
  const check = services.ckpool.healthcheck as { test: string[] };
  assert.deepEqual(check.test, ["CMD", "/usr/local/bin/tbg-ckpool-healthcheck"]);
  const dockerfile = Deno.readTextFileSync(`${root}ckpool/Dockerfile`);
  assert.match(
    dockerfile,
    /^COPY ckpool\/healthcheck\.sh \/usr\/local\/bin\/tbg-ckpool-healthcheck$/m,
  );
  // ckpool's -s is the control socket directory the check asks by default.
  assert.ok((services.ckpool.command as string[]).join(" ").includes("-s /var/run/ckpool"));
  assert.match(
    Deno.readTextFileSync(`${root}ckpool/healthcheck.sh`),
    /CKPOOL_SOCKET_DIR:-\/var\/run\/ckpool/,
  );
});

/**
 * The event collector: receives ckpool's event datagrams and delivers them to Redis Streams
 * and PostgreSQL. Configured only from environment variables (see README.md).
 *
 * Exit codes: 0 after a clean stop, 1 if events could not be delivered or receiving
 * failed, 2 for invalid configuration or a socket that cannot be bound.
 *
 * `main.ts healthcheck` instead asks a running collector's `/healthz` (same environment) and
 * exits 0 when it is healthy, 1 otherwise: the container health check.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { ConfigError, loadConfig } from "./src/ops/config.ts";
import { healthUrl, probeHealth } from "./src/ops/healthcheck.ts";
import { configureLogging } from "./src/ops/log.ts";
import { startService } from "./src/service.ts";

async function main(): Promise<number> {
  let config;
  try {
    config = loadConfig(Deno.env.toObject());
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    console.error(error.message);
    return 2;
  }
  await configureLogging(config.logLevel);
  const log = getLogger(["tbg", "collector"]);

  let exitCode = 0;
  let resolveDone: () => void;
  const done = new Promise<void>((resolve) => resolveDone = resolve);
  // Before the start, which tells the service manager it is ready: a stop asked for from then
  // on must find the handler, not the default action that ends the process at once.
  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    Deno.addSignalListener(signal, () => {
      log.info("{signal} received, stopping", { signal });
      resolveDone();
    });
  }
  let service;
  try {
    service = startService(config, () => {
      exitCode = 1;
      resolveDone();
    });
  } catch (error) {
    log.fatal("cannot start: {error}", { error: (error as Error).message });
    return 2;
  }
  await done;
  const { undelivered } = await service.stop();
  return undelivered > 0 ? 1 : exitCode;
}

/** Exit code 0 healthy, 1 anything else (Docker reserves 2). */
async function healthcheck(): Promise<number> {
  let url;
  try {
    url = healthUrl(loadConfig(Deno.env.toObject()));
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    console.error(`unhealthy: ${error.message}`);
    return 1;
  }
  if (url === undefined) {
    console.error("unhealthy: METRICS_PORT is 0, so there is no /healthz to ask");
    return 1;
  }
  // Shorter than the health check timeout in compose.yaml, so the reason reaches its log.
  const result = await probeHealth(url, 3_000);
  (result.healthy ? console.log : console.error)(result.message);
  return result.healthy ? 0 : 1;
}

if (import.meta.main) {
  const [command, ...rest] = Deno.args;
  if (command === undefined) Deno.exit(await main());
  if (command === "healthcheck" && rest.length === 0) Deno.exit(await healthcheck());
  console.error("usage: tbg-collector            run the collector (configured by environment)");
  console.error("       tbg-collector healthcheck  exit 0 if the running collector is healthy");
  Deno.exit(2);
}

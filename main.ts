/**
 * The event collector: receives ckpool's event datagrams and delivers them to Redis Streams
 * and PostgreSQL. Configured only from environment variables (see README.md).
 *
 * Exit codes: 0 after a clean stop, 1 if events could not be delivered or receiving
 * failed, 2 for invalid configuration or a socket that cannot be bound.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { ConfigError, loadConfig } from "./src/config.ts";
import { configureLogging } from "./src/log.ts";
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
  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    Deno.addSignalListener(signal, () => {
      log.info("{signal} received, stopping", { signal });
      resolveDone();
    });
  }
  await done;
  const { undelivered } = await service.stop();
  return undelivered > 0 ? 1 : exitCode;
}

if (import.meta.main) Deno.exit(await main());

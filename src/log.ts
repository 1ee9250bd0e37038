/**
 * Logging setup and a rate limit for messages that input can trigger at will.
 *
 * @module
 */
import { configure, getConsoleSink, type Logger } from "@logtape/logtape";
import type { LogLevel } from "./config.ts";

/** Sends the `tbg` category to the console at `level` and above. */
export async function configureLogging(level: LogLevel): Promise<void> {
  await configure({
    reset: true,
    sinks: { console: getConsoleSink() },
    loggers: [
      { category: ["tbg"], lowestLevel: level, sinks: ["console"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["console"] },
    ],
  });
}

/**
 * Lets at most `limit` messages through per `windowMs`; what it holds back is counted and
 * reported with the next message that passes.
 */
export class RateLimitedLog {
  readonly #logger: Logger;
  readonly #limit: number;
  readonly #windowMs: number;
  #windowStart = 0;
  #sent = 0;
  #suppressed = 0;

  constructor(logger: Logger, limit = 10, windowMs = 10_000) {
    this.#logger = logger;
    this.#limit = limit;
    this.#windowMs = windowMs;
  }

  /** Logs a warning unless the window's quota is spent. */
  warn(message: string, properties: Record<string, unknown> = {}): void {
    const now = Date.now();
    if (now - this.#windowStart >= this.#windowMs) {
      this.#windowStart = now;
      this.#sent = 0;
    }
    if (this.#sent >= this.#limit) {
      this.#suppressed++;
      return;
    }
    this.#sent++;
    const suppressed = this.#suppressed;
    this.#suppressed = 0;
    this.#logger.warn(
      suppressed > 0 ? `${message} ({suppressed} similar messages suppressed)` : message,
      { ...properties, suppressed },
    );
  }
}

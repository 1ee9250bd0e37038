/**
 * Logging setup and a rate limit for messages that input can trigger at will.
 *
 * @module
 */
import { configure, getConsoleSink, getTextFormatter, type Logger } from "@logtape/logtape";
import type { LogLevel } from "./config.ts";

/**
 * Renders a value inside a log line: plain strings bare, anything else (and any string with
 * control characters, which input can smuggle in) quoted and escaped, so one record stays
 * one line.
 */
export function renderLogValue(value: unknown, inspect: (value: unknown) => string): string {
  // deno-lint-ignore no-control-regex
  return typeof value === "string" && !/[\x00-\x1f\x7f]/.test(value) ? value : inspect(value);
}

/** Sends the `tbg` category to the console at `level` and above, one line per record. */
export async function configureLogging(level: LogLevel): Promise<void> {
  const formatter = getTextFormatter({ timestamp: "rfc3339", value: renderLogValue });
  await configure({
    reset: true,
    sinks: { console: getConsoleSink({ formatter }) },
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
    this.#emit("warning", message, properties);
  }

  /** Logs an error unless the window's quota is spent. */
  error(message: string, properties: Record<string, unknown> = {}): void {
    this.#emit("error", message, properties);
  }

  #emit(level: "warning" | "error", message: string, properties: Record<string, unknown>): void {
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
    const text = suppressed > 0 ? `${message} ({suppressed} similar messages suppressed)` : message;
    const record = { ...properties, suppressed };
    if (level === "error") this.#logger.error(text, record);
    else this.#logger.warn(text, record);
  }
}

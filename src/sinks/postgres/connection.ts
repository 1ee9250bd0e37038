/**
 * One connection to PostgreSQL for the sink, over node-postgres (`pg`) and `pg-copy-streams`:
 * plain queries, `COPY ... FROM STDIN`, and an end that is immediate when asked.
 *
 * A connection is used until its first failure that is not the data's fault, then thrown
 * away ({@link PgConnection.destroy}); the sink makes a fresh one. Nothing here reconnects
 * or retries by itself: a driver that quietly reconnects is what kept an earlier version
 * failing for minutes after its server was back.
 *
 * @module
 */
// @ts-types="@types/pg"
import pg from "pg";
// @ts-types="@types/pg-copy-streams"
import { from as copyFrom } from "pg-copy-streams";
import { withDeadline } from "../deadline.ts";

/** URL parameters node-postgres reads itself; any other becomes a session setting. */
const DRIVER_PARAMETERS = new Set([
  "application_name",
  "fallback_application_name",
  "options",
  "ssl",
  "sslmode",
  "sslcert",
  "sslkey",
  "sslrootcert",
  "sslnegotiation",
  "uselibpqcompat",
  "connect_timeout",
  "host",
  "port",
  "user",
  "password",
  "dbname",
]);

/**
 * `url` without its session settings, and those settings as the startup `options`
 * (`-c name=value ...`): `postgres://.../db?synchronous_commit=on` sets that for the session.
 */
function sessionSettings(url: string): { url: string; options: string | undefined } {
  const parsed = new URL(url);
  const settings: string[] = [];
  for (const [name, value] of [...parsed.searchParams]) {
    if (DRIVER_PARAMETERS.has(name)) continue;
    parsed.searchParams.delete(name);
    settings.push(`-c ${name}=${value.replace(/[\\ ]/g, (c) => `\\${c}`)}`);
  }
  return { url: parsed.toString(), options: settings.length > 0 ? settings.join(" ") : undefined };
}

/** A live connection; see the module doc. */
export class PgConnection {
  readonly #client: pg.Client;
  #broken: Error | undefined;

  private constructor(client: pg.Client) {
    this.#client = client;
    // An idle connection's failure arrives as an event; unheard, it would end the process.
    client.on("error", (error) => this.#broken ??= error);
    client.on("end", () => this.#broken ??= new Error("connection closed"));
  }

  /** Connects to `url` and waits for the server to be ready for queries, within `timeoutMs`. */
  static async open(url: string, timeoutMs: number): Promise<PgConnection> {
    const { url: connectionString, options } = sessionSettings(url);
    const client = new pg.Client({
      connectionString,
      options,
      application_name: "tbg-collector",
      // The driver's own bound is a backstop; the deadline below is the one that counts.
      connectionTimeoutMillis: timeoutMs + 1_000,
    });
    const connection = new PgConnection(client);
    await withDeadline(client.connect(), timeoutMs, "connecting", () => connection.destroy());
    return connection;
  }

  /** Set once the connection failed; a broken connection must be replaced. */
  get broken(): Error | undefined {
    return this.#broken;
  }

  /** Runs one statement and returns its rows. */
  async query<Row>(text: string, params: readonly unknown[] = []): Promise<Row[]> {
    const result = await this.#client.query(text, params as unknown[]);
    return result.rows as Row[];
  }

  /**
   * Streams `data` (COPY text format, in pieces) into the server with `statement`
   * (`COPY ... FROM STDIN`).
   */
  copyIn(statement: string, data: readonly string[]): Promise<void> {
    return new Promise((resolve, reject) => {
      const stream = this.#client.query(copyFrom(statement));
      stream.once("finish", resolve);
      stream.once("error", reject);
      for (const piece of data) stream.write(piece);
      stream.end();
    });
  }

  /** Drops the connection at once, whatever is in flight (which then fails). */
  destroy(): void {
    this.#broken ??= new Error("connection thrown away");
    const socket = (this.#client as unknown as { connection?: { stream?: { destroy(): void } } })
      .connection?.stream;
    socket?.destroy();
    this.#client.end().catch(() => {});
  }

  /** Ends the connection politely, or at once after `timeoutMs`. */
  async end(timeoutMs: number): Promise<void> {
    try {
      await withDeadline(this.#client.end(), timeoutMs, "closing", () => this.destroy());
    } catch {
      // closed anyway
    }
  }
}

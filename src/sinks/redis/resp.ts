/**
 * A minimal Redis connection for pipelines: many commands in one write, their replies read in
 * order from one reused buffer. Only what the Redis sink needs: no pub/sub listening, no
 * cluster, RESP2 replies.
 *
 * Two ways to send: {@link RespConnection.pipeline} decodes every reply (set-up, tests), and
 * {@link RespConnection.send} takes commands already encoded and only looks for error replies,
 * without decoding the rest: the sink's path, where a reply is an entry id nobody reads.
 *
 * @module
 */
import { DeadlineExceeded } from "../deadline.ts";

/** An error reply from Redis, returned in place of the command's result. */
export class RespError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "RespError";
  }
}

/** A decoded reply: string, integer, null, array, or an error reply. */
export type RespReply = string | number | null | RespError | RespReply[];

/** What {@link RespConnection.send} found among the replies. */
export interface SendOutcome {
  /** Index of the first error reply, or -1 when there was none. */
  readonly failedAt: number;
  /** That error reply. */
  readonly error?: RespError;
}

const CR = 13;
const LF = 10;
const utf8 = new TextEncoder();

/** `*<count>\r\n`: the header of a command of `count` arguments. */
export function arrayHeader(count: number): Uint8Array {
  return utf8.encode(`*${count}\r\n`);
}

/** One argument as a RESP bulk string: `$<bytes>\r\n<text>\r\n`. */
export function bulkString(text: string): Uint8Array {
  const body = utf8.encode(text);
  return concatBytes([utf8.encode(`$${body.length}\r\n`), body, utf8.encode("\r\n")]);
}

/** The parts, one after another, in one array. */
export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((total, part) => total + part.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/** Encodes commands as RESP arrays of bulk strings. */
export function encodeCommands(commands: readonly (readonly string[])[]): Uint8Array {
  return concatBytes(
    commands.flatMap((command) => [arrayHeader(command.length), ...command.map(bulkString)]),
  );
}

/** The first reply bytes read on a new connection, and how far the buffer grows at a time. */
const READ_CHUNK = 64 * 1024;

/**
 * Replies as they arrive, in one buffer that is reused: read into its free end, taken from its
 * front, moved back to the start when the front is used up.
 */
export class ReplyBuffer {
  bytes = new Uint8Array(READ_CHUNK);
  start = 0;
  end = 0;
  readonly #decoder = new TextDecoder();

  /** Room for at least one chunk after `end`, moving or growing the buffer as needed. */
  room(): Uint8Array {
    if (this.start === this.end) this.start = this.end = 0;
    if (this.bytes.length - this.end < READ_CHUNK / 4) {
      const kept = this.end - this.start;
      if (kept + READ_CHUNK > this.bytes.length) {
        const grown = new Uint8Array(kept + READ_CHUNK);
        grown.set(this.bytes.subarray(this.start, this.end));
        this.bytes = grown;
      } else this.bytes.copyWithin(0, this.start, this.end);
      this.start = 0;
      this.end = kept;
    }
    return this.bytes.subarray(this.end);
  }

  /** End of the line that starts at `from` (the index of its CR), or -1. */
  #lineEnd(from: number): number {
    const bytes = this.bytes;
    for (let i = from; i + 1 < this.end; i++) {
      if (bytes[i] === CR && bytes[i + 1] === LF) return i;
    }
    return -1;
  }

  /** The integer written from `from` to `to` (a length, a count or an integer reply). */
  #integer(from: number, to: number): number {
    const bytes = this.bytes;
    let negative = false;
    let i = from;
    if (bytes[i] === 45) {
      negative = true;
      i++;
    }
    let value = 0;
    for (; i < to; i++) {
      const digit = bytes[i] - 48;
      if (digit < 0 || digit > 9) throw this.#unexpected(from - 1);
      value = value * 10 + digit;
    }
    return negative ? -value : value;
  }

  #text(from: number, to: number): string {
    return this.#decoder.decode(this.bytes.subarray(from, to));
  }

  #unexpected(at: number): Error {
    const shown = this.#text(at, Math.min(this.end, at + 40));
    return new Error(`unexpected reply from Redis: ${JSON.stringify(shown)}`);
  }

  /**
   * Passes one whole reply from `at`: returns where the next one starts, or -1 when more
   * bytes are needed. `onError` gets an error reply at the top level (`depth` 0).
   */
  skip(at: number, depth: number, onError?: (message: string) => void): number {
    const lineEnd = this.#lineEnd(at + 1);
    if (lineEnd < 0) return -1;
    const next = lineEnd + 2;
    switch (this.bytes[at]) {
      case 43: // +
      case 58: // :
        return next;
      case 45: // -
        if (depth === 0) onError?.(this.#text(at + 1, lineEnd));
        return next;
      case 36: { // $
        const length = this.#integer(at + 1, lineEnd);
        if (length < 0) return next;
        return next + length + 2 <= this.end ? next + length + 2 : -1;
      }
      case 42: { // *
        let position = next;
        const count = this.#integer(at + 1, lineEnd);
        for (let i = 0; i < count && position >= 0; i++) {
          position = this.skip(position, depth + 1);
        }
        return position;
      }
      default:
        throw this.#unexpected(at);
    }
  }

  /** Decodes the whole reply at `at`, which {@link skip} has found complete. */
  decode(at: number): [reply: RespReply, next: number] {
    const lineEnd = this.#lineEnd(at + 1);
    const next = lineEnd + 2;
    switch (this.bytes[at]) {
      case 43:
        return [this.#text(at + 1, lineEnd), next];
      case 45:
        return [new RespError(this.#text(at + 1, lineEnd)), next];
      case 58:
        return [this.#integer(at + 1, lineEnd), next];
      case 36: {
        const length = this.#integer(at + 1, lineEnd);
        if (length < 0) return [null, next];
        return [this.#text(next, next + length), next + length + 2];
      }
      default: {
        const count = this.#integer(at + 1, lineEnd);
        if (count < 0) return [null, next];
        const items: RespReply[] = [];
        let position = next;
        for (let i = 0; i < count; i++) {
          const [item, after] = this.decode(position);
          items.push(item);
          position = after;
        }
        return [items, position];
      }
    }
  }
}

/**
 * Passes the replies of one pipeline and keeps the first error reply among them, without
 * decoding the rest: what {@link RespConnection.send} and the blocking connection report.
 */
export class ErrorScan {
  readonly #replies: ReplyBuffer;
  #index = 0;
  failedAt = -1;
  error: RespError | undefined;

  constructor(replies: ReplyBuffer) {
    this.#replies = replies;
  }

  /** Passes the reply at `at`; returns where the next starts, or -1 while it is not all there. */
  take(at: number): number {
    const next = this.#replies.skip(at, 0, (message) => {
      if (this.failedAt < 0) {
        this.failedAt = this.#index;
        this.error = new RespError(message);
      }
    });
    if (next >= 0) this.#index++;
    return next;
  }

  outcome(): SendOutcome {
    return { failedAt: this.failedAt, error: this.error };
  }
}

/** What a Redis URL asks for once connected: `AUTH` with its credentials, `SELECT` its database. */
export function setupCommands(url: URL): string[][] {
  const setup: string[][] = [];
  const password = decodeURIComponent(url.password);
  const username = decodeURIComponent(url.username);
  if (password) setup.push(username ? ["AUTH", username, password] : ["AUTH", password]);
  const db = url.pathname.replace(/^\//, "");
  if (db && db !== "0") setup.push(["SELECT", db]);
  return setup;
}

/** Host and port of a Redis URL (`localhost:6379` when they are left out). */
export function redisAddress(url: URL): { hostname: string; port: number } {
  return {
    hostname: url.hostname.replace(/^\[|\]$/g, "") || "localhost",
    port: Number(url.port || 6379),
  };
}

/** How often a connection looks whether the pipeline in flight is past its deadline. */
const DEADLINE_CHECK_MS = 100;

/** One TCP (or TLS) connection to Redis that sends pipelines, each within a deadline. */
export class RespConnection {
  readonly #conn: Deno.Conn;
  readonly #replies = new ReplyBuffer();
  #broken: Error | undefined;
  /** When the pipeline in flight must have its replies (0: none in flight). */
  #deadlineAt = 0;
  #deadlineWhat = "";
  #deadlineMs = 0;
  // One watch for the life of the connection instead of a timer per pipeline: a timer set and
  // cleared for every pipeline costs a sink that writes a few events at a time more than the
  // events do.
  readonly #watch: ReturnType<typeof setInterval>;

  private constructor(conn: Deno.Conn) {
    this.#conn = conn;
    this.#watch = setInterval(() => {
      if (this.#deadlineAt !== 0 && performance.now() > this.#deadlineAt) {
        // Closing the connection ends the pending write or read, which then throws.
        this.#broken ??= new DeadlineExceeded(this.#deadlineWhat, this.#deadlineMs);
        this.close();
      }
    }, DEADLINE_CHECK_MS);
    Deno.unrefTimer(this.#watch);
  }

  /**
   * Connects to `url` (`redis://[user:password@]host[:port][/db]`, or `rediss://` for TLS),
   * authenticates and selects the database.
   */
  static async connect(url: string, timeoutMs = 5_000): Promise<RespConnection> {
    const parsed = new URL(url);
    const { hostname, port } = redisAddress(parsed);
    const signal = AbortSignal.timeout(timeoutMs);
    let conn: Deno.Conn;
    if (parsed.protocol === "rediss:") {
      conn = await Deno.connectTls({ hostname, port, signal } as Deno.ConnectTlsOptions);
    } else {
      const tcp = await Deno.connect({ hostname, port, signal } as Deno.ConnectOptions);
      tcp.setNoDelay(true);
      conn = tcp;
    }
    const connection = new RespConnection(conn);
    const setup = setupCommands(parsed);
    if (setup.length > 0) {
      try {
        const { error } = await connection.send(encodeCommands(setup), setup.length, timeoutMs);
        if (error) throw error;
      } catch (error) {
        connection.close();
        throw error;
      }
    }
    return connection;
  }

  /** Whether a read or write has failed; a broken connection must be replaced. */
  get broken(): boolean {
    return this.#broken !== undefined;
  }

  /**
   * Writes all commands at once and returns their replies in order. Error replies are
   * returned, not thrown; a connection failure, or no replies within `timeoutMs`, throws and
   * breaks the connection.
   */
  async pipeline(
    commands: readonly (readonly string[])[],
    timeoutMs = 15_000,
  ): Promise<RespReply[]> {
    const replies: RespReply[] = [];
    await this.#roundTrip(encodeCommands(commands), commands.length, timeoutMs, (at) => {
      if (this.#replies.skip(at, 1) < 0) return -1;
      const [reply, next] = this.#replies.decode(at);
      replies.push(reply);
      return next;
    });
    return replies;
  }

  /**
   * Writes `commands` (RESP, `count` commands) at once and waits for their replies, keeping
   * only the first error reply. A connection failure, or no replies within `timeoutMs`,
   * throws and breaks the connection.
   */
  async send(commands: Uint8Array, count: number, timeoutMs = 15_000): Promise<SendOutcome> {
    const scan = new ErrorScan(this.#replies);
    await this.#roundTrip(commands, count, timeoutMs, (at) => scan.take(at));
    return scan.outcome();
  }

  /**
   * Writes `bytes`, then hands `count` replies, in order, to `take`: it gets where the next
   * reply starts in the buffer and returns where the one after it starts, or -1 while that
   * reply is not all there.
   */
  async #roundTrip(
    bytes: Uint8Array,
    count: number,
    timeoutMs: number,
    take: (at: number) => number,
  ): Promise<void> {
    if (this.#broken) throw this.#broken;
    this.#deadlineAt = performance.now() + timeoutMs;
    this.#deadlineWhat = `${count} Redis commands`;
    this.#deadlineMs = timeoutMs;
    const replies = this.#replies;
    try {
      for (let written = 0; written < bytes.length;) {
        written += await this.#conn.write(bytes.subarray(written));
      }
      for (let taken = 0; taken < count;) {
        const next = replies.start < replies.end ? take(replies.start) : -1;
        if (next >= 0) {
          replies.start = next;
          taken++;
          continue;
        }
        const read = await this.#conn.read(replies.room());
        if (read === null) throw new Error("connection closed by Redis");
        replies.end += read;
      }
    } catch (error) {
      this.#broken ??= error instanceof Error ? error : new Error(String(error));
      this.close();
      throw this.#broken;
    } finally {
      this.#deadlineAt = 0;
    }
  }

  close(): void {
    this.#broken ??= new Error("connection closed");
    clearInterval(this.#watch);
    try {
      this.#conn.close();
    } catch {
      // already closed
    }
  }
}

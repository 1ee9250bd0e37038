/**
 * A minimal Redis connection for pipelines: encodes many commands into one write and
 * reads their replies in order. Only what the Redis sink needs: no pub/sub listening,
 * no cluster, RESP2 replies.
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

const CRLF = "\r\n";

/** Bytes `text` takes in UTF-8. */
function utf8Length(text: string): number {
  let length = text.length;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code < 0x80) continue;
    if (code < 0x800) length += 1;
    else if (code >= 0xd800 && code <= 0xdbff) {
      length += 2; // a surrogate pair: 4 bytes for 2 UTF-16 units
      i++;
    } else length += 2;
  }
  return length;
}

/** Encodes commands as RESP arrays of bulk strings. */
export function encodeCommands(commands: readonly (readonly string[])[]): Uint8Array {
  let text = "";
  for (const command of commands) {
    text += `*${command.length}${CRLF}`;
    for (const arg of command) text += `$${utf8Length(arg)}${CRLF}${arg}${CRLF}`;
  }
  return new TextEncoder().encode(text);
}

/** Incremental reply parser over a growing byte buffer. */
class ReplyReader {
  #buffer = new Uint8Array(0);
  #offset = 0;
  readonly #decoder = new TextDecoder();

  append(chunk: Uint8Array): void {
    const rest = this.#buffer.subarray(this.#offset);
    const merged = new Uint8Array(rest.length + chunk.length);
    merged.set(rest);
    merged.set(chunk, rest.length);
    this.#buffer = merged;
    this.#offset = 0;
  }

  /** The next complete reply, or undefined if more bytes are needed. */
  next(): RespReply | undefined {
    const start = this.#offset;
    const reply = this.#parse();
    if (reply === undefined) this.#offset = start;
    return reply;
  }

  #line(): string | undefined {
    const buffer = this.#buffer;
    for (let i = this.#offset; i + 1 < buffer.length; i++) {
      if (buffer[i] === 13 && buffer[i + 1] === 10) {
        const line = this.#decoder.decode(buffer.subarray(this.#offset, i));
        this.#offset = i + 2;
        return line;
      }
    }
    return undefined;
  }

  #parse(): RespReply | undefined {
    const line = this.#line();
    if (line === undefined) return undefined;
    const body = line.slice(1);
    switch (line[0]) {
      case "+":
        return body;
      case "-":
        return new RespError(body);
      case ":":
        return Number(body);
      case "$": {
        const length = Number(body);
        if (length < 0) return null;
        if (this.#offset + length + 2 > this.#buffer.length) return undefined;
        const value = this.#decoder.decode(
          this.#buffer.subarray(this.#offset, this.#offset + length),
        );
        this.#offset += length + 2;
        return value;
      }
      case "*": {
        const count = Number(body);
        if (count < 0) return null;
        const items: RespReply[] = [];
        for (let i = 0; i < count; i++) {
          const item = this.#parse();
          if (item === undefined) return undefined;
          items.push(item);
        }
        return items;
      }
      default:
        throw new Error(`unexpected reply from Redis: ${JSON.stringify(line.slice(0, 40))}`);
    }
  }
}

/** One TCP (or TLS) connection to Redis that sends pipelines, each within a deadline. */
export class RespConnection {
  readonly #conn: Deno.Conn;
  readonly #reader = new ReplyReader();
  readonly #chunks: ReadableStreamDefaultReader<Uint8Array>;
  #broken: Error | undefined;

  private constructor(conn: Deno.Conn) {
    this.#conn = conn;
    this.#chunks = conn.readable.getReader();
  }

  /**
   * Connects to `url` (`redis://[user:password@]host[:port][/db]`, or `rediss://` for TLS),
   * authenticates and selects the database.
   */
  static async connect(url: string, timeoutMs = 5_000): Promise<RespConnection> {
    const parsed = new URL(url);
    const hostname = parsed.hostname.replace(/^\[|\]$/g, "") || "localhost";
    const port = Number(parsed.port || 6379);
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
    const setup: string[][] = [];
    const password = decodeURIComponent(parsed.password);
    const username = decodeURIComponent(parsed.username);
    if (password) setup.push(username ? ["AUTH", username, password] : ["AUTH", password]);
    const db = parsed.pathname.replace(/^\//, "");
    if (db && db !== "0") setup.push(["SELECT", db]);
    if (setup.length > 0) {
      try {
        const replies = await connection.pipeline(setup, timeoutMs);
        const failed = replies.find((reply) => reply instanceof RespError);
        if (failed) throw failed;
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
    if (this.#broken) throw this.#broken;
    // Closing the connection ends the pending write or read, which then throws.
    const deadline = setTimeout(() => {
      this.#broken = new DeadlineExceeded(`${commands.length} Redis commands`, timeoutMs);
      this.close();
    }, timeoutMs);
    try {
      const bytes = encodeCommands(commands);
      for (let written = 0; written < bytes.length;) {
        written += await this.#conn.write(bytes.subarray(written));
      }
      const replies: RespReply[] = [];
      while (replies.length < commands.length) {
        const reply = this.#reader.next();
        if (reply !== undefined) {
          replies.push(reply);
          continue;
        }
        const { value, done } = await this.#chunks.read();
        if (done) throw new Error("connection closed by Redis");
        this.#reader.append(value);
      }
      return replies;
    } catch (error) {
      this.#broken ??= error instanceof Error ? error : new Error(String(error));
      this.close();
      throw this.#broken;
    } finally {
      clearTimeout(deadline);
    }
  }

  close(): void {
    this.#broken ??= new Error("connection closed");
    try {
      this.#conn.close();
    } catch {
      // already closed
    }
  }
}

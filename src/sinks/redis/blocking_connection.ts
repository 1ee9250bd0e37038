/**
 * A Redis connection whose round trips block the calling thread: the request goes out with
 * `send(2)` and the replies come back with `recv(2)` straight into the reply buffer, through
 * libc (`ffi/tcp.ts`), with no event loop between them. It is for the Redis sink's own thread,
 * which has nothing else to do while a pipeline is in flight; plain TCP only (`redis://`), as
 * TLS has no blocking path here.
 *
 * @module
 */
import { TcpInterrupted, TcpStream } from "../../../ffi/tcp.ts";
import { DeadlineExceeded } from "../deadline.ts";
import {
  encodeCommands,
  ErrorScan,
  redisAddress,
  ReplyBuffer,
  type SendOutcome,
  setupCommands,
} from "./resp.ts";

/**
 * Longest one blocking call lasts: how soon a silent server's deadline, or the thread's
 * `interrupted`, is noticed.
 */
const SLICE_MS = 50;

/** A pipeline written, whose replies are due by `deadlineAt`. */
interface Pipeline {
  readonly count: number;
  readonly deadlineAt: number;
  readonly what: string;
  readonly timeoutMs: number;
}

/** One blocking TCP connection to Redis that sends pipelines, each within a deadline. */
export class BlockingRespConnection {
  readonly #stream: TcpStream;
  readonly #interrupted: () => boolean;
  readonly #replies = new ReplyBuffer();
  #broken: Error | undefined;
  /** The pipeline written whose replies are not taken yet. */
  #inFlight: Pipeline | undefined;

  private constructor(stream: TcpStream, interrupted: () => boolean) {
    this.#stream = stream;
    this.#interrupted = interrupted;
  }

  /**
   * Connects to `url` (`redis://[user:password@]host[:port][/db]`), authenticates and selects
   * the database, within `timeoutMs`. `interrupted` is looked at while it waits: true gives
   * up at once.
   */
  static connect(
    url: string,
    timeoutMs: number,
    interrupted: () => boolean = () => false,
  ): BlockingRespConnection {
    const parsed = new URL(url);
    if (parsed.protocol !== "redis:") {
      throw new Error(
        `a blocking Redis connection is plain TCP (redis://), not ${parsed.protocol}`,
      );
    }
    const { hostname, port } = redisAddress(parsed);
    const stream = TcpStream.connect(hostname, port, {
      deadlineAt: performance.now() + timeoutMs,
      sliceMs: SLICE_MS,
      interrupted,
    });
    const connection = new BlockingRespConnection(stream, interrupted);
    const setup = setupCommands(parsed);
    if (setup.length > 0) {
      try {
        const { error } = connection.send(encodeCommands(setup), setup.length, timeoutMs);
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
   * Writes `commands` (RESP, `count` commands) and waits for their replies, keeping only the
   * first error reply. A connection failure, no replies within `timeoutMs`, or `interrupted`
   * throws and breaks the connection.
   */
  send(commands: Uint8Array, count: number, timeoutMs: number): SendOutcome {
    this.write(commands, count, timeoutMs);
    return this.replies();
  }

  /**
   * Writes `commands` (RESP, `count` commands) without waiting for their replies: take them
   * with {@link replies} before the next write. The deadline starts now.
   */
  write(commands: Uint8Array, count: number, timeoutMs: number): void {
    if (this.#broken) throw this.#broken;
    if (this.#inFlight) throw new Error("the replies of the last pipeline were not taken");
    const pipeline = {
      count,
      deadlineAt: performance.now() + timeoutMs,
      what: `${count} Redis commands`,
      timeoutMs,
    };
    this.#failOnError(() => {
      for (let written = 0; written < commands.length;) {
        const sent = this.#stream.write(commands.subarray(written));
        if (sent === 0) this.#stillWaiting(pipeline);
        written += sent;
      }
    });
    this.#inFlight = pipeline;
  }

  /**
   * Waits for the replies of the pipeline {@link write} sent and returns the first error
   * reply among them. A connection failure, the deadline, or `interrupted` throws and breaks
   * the connection.
   */
  replies(): SendOutcome {
    const pipeline = this.#inFlight;
    if (pipeline === undefined) throw new Error("no pipeline in flight");
    this.#inFlight = undefined;
    const replies = this.#replies;
    const scan = new ErrorScan(replies);
    this.#failOnError(() => {
      for (let taken = 0; taken < pipeline.count;) {
        const next = replies.start < replies.end ? scan.take(replies.start) : -1;
        if (next >= 0) {
          replies.start = next;
          taken++;
          continue;
        }
        const read = this.#stream.read(replies.room());
        if (read === null) throw new Error("connection closed by Redis");
        if (read === 0) this.#stillWaiting(pipeline);
        replies.end += read;
      }
    });
    return scan.outcome();
  }

  /** Runs `io`; if it throws, the connection is broken and closed, and the error thrown. */
  #failOnError(io: () => void): void {
    try {
      io();
    } catch (error) {
      this.#broken ??= error instanceof Error ? error : new Error(String(error));
      this.close();
      throw this.#broken;
    }
  }

  /** After a slice that moved nothing: throws if the deadline passed or the thread stops. */
  #stillWaiting(pipeline: Pipeline): void {
    if (this.#interrupted()) throw new TcpInterrupted(pipeline.what);
    if (performance.now() > pipeline.deadlineAt) {
      throw new DeadlineExceeded(pipeline.what, pipeline.timeoutMs);
    }
  }

  close(): void {
    this.#broken ??= new Error("connection closed");
    this.#stream.close();
  }
}

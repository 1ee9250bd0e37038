/**
 * A blocking TCP client over libc, for a thread that owns its loop (the Redis sink's): one
 * `send(2)` or `recv(2)` per call, with no event loop, promise or runtime op in between.
 * Every wait is cut into slices of at most `sliceMs` (`SO_RCVTIMEO` / `SO_SNDTIMEO`, and
 * `poll(2)` while connecting), so that the caller can look at a deadline, or whether it was
 * asked to stop, while the peer is silent.
 *
 * @module
 */
import { cString, Errno, lastErrno, loadLibc, SocketError, SOL_SOCKET } from "./libc.ts";

const SOCK_STREAM = 1;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
const IPPROTO_TCP = 6;
const TCP_NODELAY = 1;
const SO_ERROR = 4;
const SO_RCVTIMEO = 20;
const SO_SNDTIMEO = 21;
const F_GETFL = 3;
const F_SETFL = 4;
const O_NONBLOCK = 0o4000;
const POLLOUT = 0x4;
const EINPROGRESS = 115;
const ETIMEDOUT = 110;
/** A peer that closed its end must be an error, not a SIGPIPE. */
const MSG_NOSIGNAL = 0x4000;

/** Offsets inside glibc's `struct addrinfo` on LP64 (48 bytes). */
const ADDRINFO = { family: 4, socktype: 8, protocol: 12, addrlen: 16, addr: 24, next: 40 };
const ADDRINFO_SIZE = 48;

/** Options for {@link TcpStream.connect}. */
export interface TcpConnectOptions {
  /** `performance.now()` by which the connection must be made. */
  readonly deadlineAt: number;
  /** Longest one blocking call lasts. */
  readonly sliceMs: number;
  /** Looked at between slices; true gives up with {@link TcpInterrupted}. */
  readonly interrupted: () => boolean;
}

/** Thrown when the caller's `interrupted` said to stop waiting. */
export class TcpInterrupted extends Error {
  constructor(what: string) {
    super(`${what} given up: the thread is stopping`);
    this.name = "TcpInterrupted";
  }
}

/** The addresses `host` and `port` resolve to, as `getaddrinfo(3)` gives them. */
function resolve(host: string, port: number): { family: number; address: Uint8Array }[] {
  const c = loadLibc();
  const hints = new Uint8Array(ADDRINFO_SIZE);
  new DataView(hints.buffer).setInt32(ADDRINFO.socktype, SOCK_STREAM, true);
  const result = new BigUint64Array(1);
  const code = c.getaddrinfo(cString(host), cString(String(port)), hints, result);
  if (code !== 0) {
    const text = c.gai_strerror(code);
    throw new Error(
      `cannot resolve ${host}: ${text ? Deno.UnsafePointerView.getCString(text) : code}`,
    );
  }
  const first = Deno.UnsafePointer.create(result[0]);
  const found: { family: number; address: Uint8Array }[] = [];
  try {
    for (let entry = first; entry !== null;) {
      const view = new Deno.UnsafePointerView(entry);
      const length = view.getUint32(ADDRINFO.addrlen);
      const address = view.getPointer(ADDRINFO.addr);
      if (address !== null && length > 0) {
        found.push({
          family: view.getInt32(ADDRINFO.family),
          address: new Uint8Array(
            Deno.UnsafePointerView.getArrayBuffer(address, length).slice(0),
          ),
        });
      }
      entry = view.getPointer(ADDRINFO.next);
    }
  } finally {
    c.freeaddrinfo(first);
  }
  return found;
}

function setTimeoutOption(fd: number, name: number, ms: number): void {
  const timeval = new BigInt64Array([BigInt(Math.floor(ms / 1000)), BigInt((ms % 1000) * 1000)]);
  if (loadLibc().setsockopt(fd, SOL_SOCKET, name, new Uint8Array(timeval.buffer), 16) < 0) {
    throw new SocketError("setsockopt", lastErrno());
  }
}

/** One connected TCP socket whose calls block the calling thread, a slice at a time. */
export class TcpStream {
  readonly #fd: number;
  #closed = false;

  private constructor(fd: number) {
    this.#fd = fd;
  }

  /**
   * Resolves `host` and connects to the first of its addresses that answers, with
   * `TCP_NODELAY` (a pipeline is one write; Nagle would only hold its tail).
   *
   * @throws {SocketError} the last address's error, `ETIMEDOUT` past the deadline
   * @throws {TcpInterrupted} when `interrupted` turned true
   */
  static connect(host: string, port: number, options: TcpConnectOptions): TcpStream {
    let lastError: Error = new Error(`${host} resolves to no address`);
    for (const { family, address } of resolve(host, port)) {
      try {
        return TcpStream.#connectTo(family, address, `connect to ${host}:${port}`, options);
      } catch (error) {
        if (error instanceof TcpInterrupted) throw error;
        lastError = error as Error;
      }
    }
    throw lastError;
  }

  static #connectTo(
    family: number,
    address: Uint8Array,
    what: string,
    options: TcpConnectOptions,
  ): TcpStream {
    const c = loadLibc();
    const fd = c.socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) throw new SocketError("socket", lastErrno());
    try {
      if (c.connect(fd, address as Uint8Array<ArrayBuffer>, address.length) < 0) {
        const errno = lastErrno();
        if (errno !== EINPROGRESS) throw new SocketError(what, errno);
        TcpStream.#awaitConnected(fd, what, options);
      }
      // From here on every call blocks, for one slice at most.
      c.fcntl(fd, F_SETFL, c.fcntl(fd, F_GETFL, 0) & ~O_NONBLOCK);
      setTimeoutOption(fd, SO_RCVTIMEO, options.sliceMs);
      setTimeoutOption(fd, SO_SNDTIMEO, options.sliceMs);
      c.setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, new Uint8Array(new Int32Array([1]).buffer), 4);
      return new TcpStream(fd);
    } catch (error) {
      c.close(fd);
      throw error;
    }
  }

  static #awaitConnected(fd: number, what: string, options: TcpConnectOptions): void {
    const c = loadLibc();
    const pollfd = new Uint8Array(8);
    const view = new DataView(pollfd.buffer);
    while (true) {
      const left = options.deadlineAt - performance.now();
      if (left <= 0) throw new SocketError(what, ETIMEDOUT);
      if (options.interrupted()) throw new TcpInterrupted(what);
      view.setInt32(0, fd, true);
      view.setInt16(4, POLLOUT, true);
      view.setInt16(6, 0, true);
      const ready = c.poll(pollfd, 1n, Math.ceil(Math.min(left, options.sliceMs)));
      if (ready < 0 && lastErrno() !== Errno.EINTR) throw new SocketError("poll", lastErrno());
      if (ready > 0) break;
    }
    const error = new Int32Array(1);
    const length = new Uint32Array([4]);
    c.getsockopt(
      fd,
      SOL_SOCKET,
      SO_ERROR,
      new Uint8Array(error.buffer),
      new Uint8Array(length.buffer),
    );
    if (error[0] !== 0) throw new SocketError(what, error[0]);
  }

  /**
   * Writes what it can of `bytes` within one slice: returns how many bytes were sent, 0 when
   * the slice passed with nothing sent.
   *
   * @throws {SocketError} when the connection failed (`EPIPE`, `ECONNRESET`, ...)
   */
  write(bytes: Uint8Array): number {
    while (true) {
      const sent = Number(
        loadLibc().send(
          this.#fd,
          bytes as Uint8Array<ArrayBuffer>,
          BigInt(bytes.length),
          MSG_NOSIGNAL,
        ),
      );
      if (sent >= 0) return sent;
      const errno = lastErrno();
      if (errno === Errno.EAGAIN) return 0;
      if (errno !== Errno.EINTR) throw new SocketError("send", errno);
    }
  }

  /**
   * Reads into `target` what arrives within one slice: returns the bytes read, 0 when the
   * slice passed with nothing, or null when the peer closed the connection.
   *
   * @throws {SocketError} when the connection failed
   */
  read(target: Uint8Array): number | null {
    while (true) {
      const read = Number(
        loadLibc().recv(this.#fd, target as Uint8Array<ArrayBuffer>, BigInt(target.length), 0),
      );
      if (read > 0) return read;
      if (read === 0) return target.length === 0 ? 0 : null;
      const errno = lastErrno();
      if (errno === Errno.EAGAIN) return 0;
      if (errno !== Errno.EINTR) throw new SocketError("recv", errno);
    }
  }

  /** Closes the socket; later calls are no-ops. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    loadLibc().close(this.#fd);
  }
}

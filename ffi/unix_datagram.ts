/**
 * Unix datagram sockets for the collector: bind a listening path, receive datagrams in
 * batches with `recvmmsg` together with each sender's credentials (`SO_PASSCRED`), and send
 * (for tests, the demo emitter and benchmarks).
 *
 * @module
 */
import {
  AF_UNIX,
  check,
  CMSGHDR,
  CREDENTIALS_CMSG_LEN,
  CREDENTIALS_CMSG_SPACE,
  cString,
  Errno,
  getIntOption,
  IOVEC_SIZE,
  lastErrno,
  loadLibc,
  MMSGHDR_SIZE,
  MSG_DONTWAIT,
  MSG_PEEK,
  MSG_TRUNC,
  MSGHDR,
  POLLERR,
  POLLIN,
  POLLNVAL,
  SCM_CREDENTIALS,
  setIntOption,
  setPointer,
  SO_DOMAIN,
  SO_PASSCRED,
  SO_PEEK_OFF,
  SO_RCVBUF,
  SO_RCVBUFFORCE,
  SO_SNDBUF,
  SO_TYPE,
  SOCK_CLOEXEC,
  SOCK_DGRAM,
  SOCKADDR_UN_SIZE,
  sockaddrLength,
  sockaddrUn,
  SocketError,
  SOL_SOCKET,
  UCRED,
} from "./libc.ts";

/** Options for {@link bindDatagramSocket}. */
export interface BindOptions {
  /** File mode of the socket, e.g. `0o660`. */
  mode: number;
  /** Wanted `SO_RCVBUF` in bytes; the kernel may grant less. */
  receiveBufferBytes: number;
  /** Group id to give the socket file; `undefined` keeps the group it was created with. */
  group?: number;
}

/** A bound socket. */
export interface BoundSocket {
  readonly fd: number;
  readonly path: string;
  /** `SO_RCVBUF` as the kernel reports it after the request. */
  readonly receiveBufferBytes: number;
  /**
   * Passed in by the process that holds it (systemd's socket activation): it outlives this
   * process, so it is never unlinked or closed here, and what is queued on it at exit waits
   * there for the next start.
   */
  readonly inherited: boolean;
}

function newDatagramSocket(): number {
  return check(
    loadLibc().socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0),
    "socket(AF_UNIX, SOCK_DGRAM)",
  );
}

/**
 * Decides whether an existing path may be replaced: a socket nobody listens on is stale
 * and removed; a regular file, a directory or a live listener is an error.
 */
function clearStaleSocket(path: string): void {
  let info: Deno.FileInfo;
  try {
    info = Deno.lstatSync(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return;
    throw error;
  }
  if (!info.isSocket) {
    throw new Error(
      `${path} exists and is not a socket; refusing to remove it. Remove it yourself or set ` +
        `SOCKET_PATH to another path.`,
    );
  }
  const libc = loadLibc();
  const probe = newDatagramSocket();
  try {
    const address = sockaddrUn(path);
    if (libc.connect(probe, address, address.length) === 0) {
      throw new Error(
        `another process is receiving on ${path}; stop it first or set SOCKET_PATH to another path`,
      );
    }
    const error = new SocketError(`probe ${path}`, lastErrno());
    if (error.errno !== Errno.ECONNREFUSED) throw error;
  } finally {
    libc.close(probe);
  }
  Deno.removeSync(path);
}

/** `uid_t` -1: lchown leaves the owner as it is. */
const KEEP_OWNER = 0xffff_ffff;

/**
 * Creates an `AF_UNIX` `SOCK_DGRAM` socket bound at `path`, with the given mode (and group)
 * and an enlarged receive buffer, that reports every datagram's sender credentials (see
 * {@link BatchReceiver.senderUid}). A stale socket file is removed first.
 */
export function bindDatagramSocket(path: string, options: BindOptions): BoundSocket {
  const address = sockaddrUn(path);
  clearStaleSocket(path);
  const libc = loadLibc();
  const fd = newDatagramSocket();
  try {
    // Before bind: the kernel attaches credentials only to datagrams sent while the option
    // is on, so one sent between bind and setsockopt would arrive as "uid unknown".
    check(setIntOption(fd, SOL_SOCKET, SO_PASSCRED, 1), `setsockopt SO_PASSCRED on ${path}`);
    check(libc.bind(fd, address, address.length), `bind ${path}`);
    if (options.group !== undefined) {
      // Before chmod, so the final mode never applies to the group the file was created
      // with. lchown: a symlink swapped in at the path is not followed.
      check(
        libc.lchown(cString(path), KEEP_OWNER, options.group),
        `chown ${path} to group ${options.group}`,
        "changing a file's group to one we are not a member of needs CAP_CHOWN",
      );
    }
    Deno.chmodSync(path, options.mode);
    return withReceiveBuffer(fd, path, options.receiveBufferBytes, false);
  } catch (error) {
    libc.close(fd);
    try {
      if (Deno.lstatSync(path).isSocket) Deno.removeSync(path);
    } catch {
      // nothing was bound
    }
    throw error;
  }
}

/** Asks for a receive buffer of `bytes` (the kernel may grant less) and describes the socket. */
function withReceiveBuffer(
  fd: number,
  path: string,
  bytes: number,
  inherited: boolean,
): BoundSocket {
  // SO_RCVBUFFORCE passes net.core.rmem_max when we hold CAP_NET_ADMIN; else the capped one.
  if (setIntOption(fd, SOL_SOCKET, SO_RCVBUFFORCE, bytes) !== 0) {
    setIntOption(fd, SOL_SOCKET, SO_RCVBUF, bytes);
  }
  return { fd, path, receiveBufferBytes: getIntOption(fd, SOL_SOCKET, SO_RCVBUF), inherited };
}

/**
 * The path an `AF_UNIX` socket is bound to (`@name` for an abstract one, "" if unbound).
 */
function boundPath(fd: number): string {
  const address = new Uint8Array(SOCKADDR_UN_SIZE);
  const length = new Uint32Array([address.length]);
  check(loadLibc().getsockname(fd, address, length), `getsockname on descriptor ${fd}`);
  const name = address.subarray(2, Math.min(length[0], address.length));
  if (name.length === 0) return "";
  if (name[0] === 0) return `@${new TextDecoder().decode(name.subarray(1))}`;
  const end = name.indexOf(0);
  return new TextDecoder().decode(end < 0 ? name : name.subarray(0, end));
}

/**
 * Takes a datagram socket another process bound and passed in (systemd's socket
 * activation): checks it is an `AF_UNIX` `SOCK_DGRAM` socket, turns on `SO_PASSCRED` (the
 * holder should have: `PassCredentials=yes`) and asks for the receive buffer. Throws, naming
 * the descriptor, when it is anything else.
 */
export function adoptDatagramSocket(
  fd: number,
  options: Pick<BindOptions, "receiveBufferBytes">,
): BoundSocket {
  let domain: number;
  let type: number;
  try {
    domain = getIntOption(fd, SOL_SOCKET, SO_DOMAIN);
    type = getIntOption(fd, SOL_SOCKET, SO_TYPE);
  } catch (error) {
    throw new Error(`descriptor ${fd} passed in is not a socket: ${(error as Error).message}`);
  }
  if (domain !== AF_UNIX || type !== SOCK_DGRAM) {
    throw new Error(
      `descriptor ${fd} passed in is not an AF_UNIX datagram socket (domain ${domain}, ` +
        `type ${type}): the .socket unit needs ListenDatagram= with a path`,
    );
  }
  const path = boundPath(fd);
  if (path === "") throw new Error(`the socket passed in as descriptor ${fd} is not bound`);
  check(setIntOption(fd, SOL_SOCKET, SO_PASSCRED, 1), `setsockopt SO_PASSCRED on ${path}`);
  return withReceiveBuffer(fd, path, options.receiveBufferBytes, true);
}

/** Closes a socket descriptor. */
export function closeSocket(fd: number): void {
  loadLibc().close(fd);
}

/** Removes a socket file if it is still there and still a socket. */
export function unlinkSocket(path: string): void {
  try {
    if (Deno.lstatSync(path).isSocket) Deno.removeSync(path);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
}

/** One received datagram, a view into the receiver's buffers until the next receive. */
export interface ReceivedDatagram {
  readonly bytes: Uint8Array;
  /** The datagram was larger than a slot and was cut. */
  readonly truncated: boolean;
}

/** A sender's credentials as the kernel reports them (`struct ucred`). */
export interface SenderCredentials {
  /** Process id in the receiver's pid namespace; 0 if the sender's is not visible there. */
  readonly pid: number;
  /** Real uid in the receiver's user namespace; 65534 (overflow uid) if unmapped there. */
  readonly uid: number;
  /** Real gid in the receiver's user namespace. */
  readonly gid: number;
}

/** {@link BatchReceiver.senderUid} of a datagram that came without credentials. */
export const UNKNOWN_SENDER = -1;

/**
 * Receives up to `slots` datagrams per system call with `recvmmsg`, into buffers it owns,
 * each with its sender's credentials when the socket has `SO_PASSCRED` (as
 * {@link bindDatagramSocket} sets it). Not thread-safe: one receiver per thread.
 *
 * A receive only peeks (`MSG_PEEK`, walking the queue with `SO_PEEK_OFF`): the datagrams
 * stay queued until {@link BatchReceiver.consume} takes them off, which the caller does once
 * it has stored them. A process killed in between leaves them on the socket, and when the
 * socket outlives the process (socket activation) the next one receives them again; the
 * peek offset is reset when a receiver is made, for that reason.
 */
export class BatchReceiver {
  readonly #fd: number;
  readonly #slots: number;
  readonly #slotBytes: number;
  readonly #data: Uint8Array<ArrayBuffer>;
  readonly #headers: Uint8Array<ArrayBuffer>;
  readonly #headerView: DataView;
  // Keeps the iovec array alive: the headers point into it.
  readonly #iovecs: Uint8Array<ArrayBuffer>;
  /**
   * One control buffer per slot, CMSG_SPACE(sizeof(struct ucred)) bytes: room for exactly
   * the credentials message, which the kernel writes first. With SO_PASSCRED on, no room is
   * left for descriptors a sender passes (SCM_RIGHTS), so they are never installed in this
   * process: the kernel closes them and sets MSG_CTRUNC.
   */
  readonly #control: Uint8Array<ArrayBuffer>;
  readonly #controlView: DataView;
  /** Headers whose msg_controllen the last call overwrote. */
  #used = 0;
  /** struct pollfd for this socket: fd, events, revents. */
  readonly #pollfd: Uint8Array<ArrayBuffer>;
  readonly #pollView: DataView;
  readonly #waitMs: number;
  #failures = 0;
  /** Headers with no buffers at all: consuming discards the datagrams' bytes. */
  readonly #discard: Uint8Array<ArrayBuffer>;
  /** Datagrams of the last receive, not consumed yet. */
  #peeked = 0;

  /**
   * @param fd a bound datagram socket
   * @param slots datagrams per call
   * @param slotBytes largest datagram accepted whole; larger ones arrive truncated
   * @param waitMs longest one waiting receive blocks before returning to check for a stop
   */
  constructor(fd: number, slots = 256, slotBytes = 16 * 1024, waitMs = 200) {
    this.#fd = fd;
    this.#waitMs = waitMs;
    this.#pollfd = new Uint8Array(8);
    this.#pollView = new DataView(this.#pollfd.buffer);
    this.#pollView.setInt32(0, fd, true);
    this.#pollView.setInt16(4, POLLIN, true);
    this.#slots = slots;
    this.#slotBytes = slotBytes;
    this.#data = new Uint8Array(slots * slotBytes);
    this.#iovecs = new Uint8Array(slots * IOVEC_SIZE);
    this.#headers = new Uint8Array(slots * MMSGHDR_SIZE);
    this.#headerView = new DataView(this.#headers.buffer);
    this.#discard = new Uint8Array(slots * MMSGHDR_SIZE);
    this.#control = new Uint8Array(slots * CREDENTIALS_CMSG_SPACE);
    this.#controlView = new DataView(this.#control.buffer);
    const iovecView = new DataView(this.#iovecs.buffer);
    for (let i = 0; i < slots; i++) {
      setPointer(
        iovecView,
        i * IOVEC_SIZE,
        this.#data.subarray(i * slotBytes, (i + 1) * slotBytes),
      );
      iovecView.setBigUint64(i * IOVEC_SIZE + 8, BigInt(slotBytes), true);
      setPointer(
        this.#headerView,
        i * MMSGHDR_SIZE + MSGHDR.iov,
        this.#iovecs.subarray(i * IOVEC_SIZE),
      );
      this.#headerView.setBigUint64(i * MMSGHDR_SIZE + MSGHDR.iovlen, 1n, true);
      setPointer(
        this.#headerView,
        i * MMSGHDR_SIZE + MSGHDR.control,
        this.#control.subarray(i * CREDENTIALS_CMSG_SPACE),
      );
      this.#headerView.setBigUint64(
        i * MMSGHDR_SIZE + MSGHDR.controllen,
        BigInt(CREDENTIALS_CMSG_SPACE),
        true,
      );
    }
    this.#rewindPeek();
  }

  /** Peeks from the head of the queue again. */
  #rewindPeek(): void {
    check(setIntOption(this.#fd, SOL_SOCKET, SO_PEEK_OFF, 0), "setsockopt SO_PEEK_OFF");
  }

  /**
   * Waits (up to `waitMs`) for at least one datagram, then takes whatever else is queued, up
   * to the slot count. With `wait` false it never blocks.
   *
   * Control flow never depends on errno: Deno may overwrite it between the failed call and
   * the read (an idle receiver once saw ERANGE where the kernel had returned EAGAIN). `poll`
   * says "nothing yet" by returning 0 and a broken socket through `revents`; a read that
   * fails after `poll` said readable is treated as nothing read, unless it keeps failing.
   *
   * The datagrams stay queued until {@link consume}; until then a receive returns them
   * again. An oversized datagram ends the batch (the peek offset would land inside it).
   *
   * @returns the number of datagrams now readable through {@link datagram}; 0 if none
   */
  receive(wait: boolean): number {
    if (this.#peeked > 0) return this.#peeked;
    const libc = loadLibc();
    if (wait) {
      const ready = libc.poll(this.#pollfd, 1n, this.#waitMs);
      if (ready <= 0) return 0; // timeout, or a signal interrupted the wait
      const revents = this.#pollView.getInt16(6, true);
      if (revents & (POLLERR | POLLNVAL)) {
        throw new SocketError(`poll on the event socket (revents 0x${revents.toString(16)})`, 9);
      }
    }
    // The kernel rewrites msg_controllen of every header it fills with the length it used
    // (0 without credentials); give those headers their whole buffer back. The low half is
    // enough: every value written is below 2^32, so the high half stays 0.
    for (let i = 0; i < this.#used; i++) {
      this.#headerView.setUint32(
        i * MMSGHDR_SIZE + MSGHDR.controllen,
        CREDENTIALS_CMSG_SPACE,
        true,
      );
    }
    const result = libc.recvmmsg(
      this.#fd,
      this.#headers,
      this.#slots,
      MSG_DONTWAIT | MSG_PEEK,
      null,
    );
    if (result >= 0) {
      this.#failures = 0;
      this.#used = result;
      this.#peeked = result;
      for (let i = 0; i < result; i++) {
        if (this.#truncated(i)) {
          // The offset moved by the part that was copied, not by the whole datagram: what
          // the kernel returned after it is the rest of that datagram, not the next one.
          this.#peeked = i + 1;
          break;
        }
      }
      return this.#peeked;
    }
    if (wait && ++this.#failures >= 1000) {
      throw new SocketError("recvmmsg failed 1000 times in a row", lastErrno());
    }
    return 0;
  }

  /**
   * Takes the datagrams of the last {@link receive} off the queue; call once they are
   * stored. The next receive returns the datagrams that follow them.
   */
  consume(): void {
    const count = this.#peeked;
    if (count === 0) return;
    this.#peeked = 0;
    const taken = loadLibc().recvmmsg(this.#fd, this.#discard, count, MSG_DONTWAIT, null);
    const truncated = this.#truncated(count - 1);
    if (taken !== count) {
      throw new SocketError(`recvmmsg took ${taken} of ${count} peeked datagrams`, lastErrno());
    }
    if (truncated) this.#rewindPeek();
  }

  /** The i-th datagram of the last {@link receive}. */
  datagram(i: number): ReceivedDatagram {
    const length = this.#headerView.getUint32(i * MMSGHDR_SIZE + MSGHDR.len, true);
    const start = i * this.#slotBytes;
    return { bytes: this.#data.subarray(start, start + length), truncated: this.#truncated(i) };
  }

  /** Whether the i-th datagram of the last receive was cut to its slot. */
  #truncated(i: number): boolean {
    return (this.#headerView.getInt32(i * MMSGHDR_SIZE + MSGHDR.flags, true) & MSG_TRUNC) !== 0;
  }

  /**
   * Byte offset of the i-th datagram's `struct ucred` in the control buffers, or -1 if it
   * came without one. The buffer holds at most one control message, so only the first
   * needs looking at.
   */
  #credentialsAt(i: number): number {
    const controlLength = this.#headerView.getUint32(i * MMSGHDR_SIZE + MSGHDR.controllen, true);
    if (controlLength < CREDENTIALS_CMSG_LEN) return -1;
    const cmsg = i * CREDENTIALS_CMSG_SPACE;
    const view = this.#controlView;
    if (
      view.getUint32(cmsg + CMSGHDR.len, true) < CREDENTIALS_CMSG_LEN ||
      view.getInt32(cmsg + CMSGHDR.level, true) !== SOL_SOCKET ||
      view.getInt32(cmsg + CMSGHDR.type, true) !== SCM_CREDENTIALS
    ) {
      return -1;
    }
    return cmsg + CMSGHDR.data;
  }

  /**
   * The uid that sent the i-th datagram of the last {@link receive}, or
   * {@link UNKNOWN_SENDER} if it carried no credentials. Allocates nothing, for the
   * per-datagram check.
   */
  senderUid(i: number): number {
    const at = this.#credentialsAt(i);
    return at < 0 ? UNKNOWN_SENDER : this.#controlView.getUint32(at + UCRED.uid, true);
  }

  /** The sender of the i-th datagram of the last {@link receive}, if the kernel said. */
  credentials(i: number): SenderCredentials | undefined {
    const at = this.#credentialsAt(i);
    if (at < 0) return undefined;
    const view = this.#controlView;
    return {
      pid: view.getInt32(at + UCRED.pid, true),
      uid: view.getUint32(at + UCRED.uid, true),
      gid: view.getUint32(at + UCRED.gid, true),
    };
  }
}

/** Sends datagrams to one socket path, the way the patched ckpool does (never blocks). */
export class DatagramSender {
  readonly #fd: number;
  readonly #address: Uint8Array<ArrayBuffer>;
  readonly #addressLength: number;
  #closed = false;

  /**
   * @param path the collector's socket path (`@name` for an abstract one)
   * @param sendBufferBytes `SO_SNDBUF` to request
   */
  constructor(path: string, sendBufferBytes = 4 * 1024 * 1024) {
    this.#address = sockaddrUn(path);
    this.#addressLength = sockaddrLength(path);
    this.#fd = newDatagramSocket();
    setIntOption(this.#fd, SOL_SOCKET, SO_SNDBUF, sendBufferBytes);
  }

  /**
   * Sends one datagram with `MSG_DONTWAIT`.
   *
   * @returns true if the kernel took it; false if the queue was full or nobody listens
   */
  send(bytes: Uint8Array<ArrayBuffer>): boolean {
    return loadLibc().sendto(
      this.#fd,
      bytes,
      BigInt(bytes.length),
      MSG_DONTWAIT,
      this.#address,
      this.#addressLength,
    ) >= 0;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    loadLibc().close(this.#fd);
  }
}

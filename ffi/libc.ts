/**
 * The libc calls the collector needs, over `Deno.dlopen`: an `AF_UNIX` `SOCK_DGRAM` socket
 * (`unix_datagram.ts`), a blocking TCP client (`tcp.ts`), thread names and priorities, and a
 * file lock. Struct layouts and offsets are those of Linux glibc on the LP64 targets
 * x86_64 and aarch64 (8-byte pointers and `size_t`, 4-byte `int`, `pid_t`, `uid_t`, `gid_t`,
 * 8-byte alignment of control messages); they are not valid for 32-bit or other ABIs.
 *
 * @module
 */

/** Constants of Linux's socket API. */
export const AF_UNIX = 1;
export const SOCK_DGRAM = 2;
export const SOCK_CLOEXEC = 0o2000000;
export const SOL_SOCKET = 1;
export const SO_SNDBUF = 7;
export const SO_RCVBUF = 8;
export const SO_PASSCRED = 16;
export const SO_TYPE = 3;
export const SO_DOMAIN = 39;
export const SO_PEEK_OFF = 42;
export const SO_RCVBUFFORCE = 33;
export const MSG_PEEK = 0x2;
export const MSG_TRUNC = 0x20;
export const MSG_DONTWAIT = 0x40;
export const POLLIN = 0x1;
export const POLLERR = 0x8;
export const POLLNVAL = 0x20;

/** `sun_path` is 108 bytes and needs a terminating NUL. */
export const SUN_PATH_MAX = 107;
/** sizeof(struct sockaddr_un). */
export const SOCKADDR_UN_SIZE = 110;
/** sizeof(struct iovec). */
export const IOVEC_SIZE = 16;
/** sizeof(struct mmsghdr): a 56-byte msghdr, a 4-byte length, padding. */
export const MMSGHDR_SIZE = 64;
/** Offsets inside struct msghdr / mmsghdr. */
export const MSGHDR = {
  name: 0,
  namelen: 8,
  iov: 16,
  iovlen: 24,
  control: 32,
  controllen: 40,
  flags: 48,
  /** `msg_len` of the enclosing mmsghdr. */
  len: 56,
} as const;

/** `cmsg_type` of a control message at `SOL_SOCKET` carrying a `struct ucred`. */
export const SCM_CREDENTIALS = 2;
/** Offsets inside struct cmsghdr: `size_t cmsg_len`, `int cmsg_level`, `int cmsg_type`. */
export const CMSGHDR = {
  len: 0,
  level: 8,
  type: 12,
  /** CMSG_DATA: the header rounded up to 8 bytes. */
  data: 16,
} as const;
/** Offsets inside struct ucred (12 bytes): `pid_t pid`, `uid_t uid`, `gid_t gid`. */
export const UCRED = { pid: 0, uid: 4, gid: 8 } as const;
/** CMSG_LEN(sizeof(struct ucred)): `cmsg_len` of a credentials message. */
export const CREDENTIALS_CMSG_LEN = 28;
/** CMSG_SPACE(sizeof(struct ucred)): control buffer bytes for one credentials message. */
export const CREDENTIALS_CMSG_SPACE = 32;

const ERRNO_NAMES: Record<number, string> = {
  1: "EPERM",
  2: "ENOENT",
  4: "EINTR",
  9: "EBADF",
  11: "EAGAIN",
  12: "ENOMEM",
  13: "EACCES",
  17: "EEXIST",
  20: "ENOTDIR",
  22: "EINVAL",
  30: "EROFS",
  32: "EPIPE",
  104: "ECONNRESET",
  110: "ETIMEDOUT",
  113: "EHOSTUNREACH",
  115: "EINPROGRESS",
  36: "ENAMETOOLONG",
  88: "ENOTSOCK",
  97: "EAFNOSUPPORT",
  90: "EMSGSIZE",
  91: "EPROTOTYPE",
  98: "EADDRINUSE",
  105: "ENOBUFS",
  111: "ECONNREFUSED",
};

/** Errno values the callers branch on. */
export const Errno = {
  EINTR: 4,
  EAGAIN: 11,
  ECONNREFUSED: 111,
  ENOENT: 2,
} as const;

const symbols = {
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
  recvmmsg: { parameters: ["i32", "buffer", "u32", "i32", "pointer"], result: "i32" },
  getsockname: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32" },
  sendto: {
    parameters: ["i32", "buffer", "usize", "i32", "buffer", "u32"],
    result: "isize",
  },
  send: { parameters: ["i32", "buffer", "usize", "i32"], result: "isize" },
  recv: { parameters: ["i32", "buffer", "usize", "i32"], result: "isize" },
  getaddrinfo: { parameters: ["buffer", "buffer", "buffer", "buffer"], result: "i32" },
  freeaddrinfo: { parameters: ["pointer"], result: "void" },
  gai_strerror: { parameters: ["i32"], result: "pointer" },
  // Declared with its one int argument: how glibc reads it on x86_64 and aarch64.
  fcntl: { parameters: ["i32", "i32", "i32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  lchown: { parameters: ["buffer", "u32", "u32"], result: "i32" },
  open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
  flock: { parameters: ["i32", "i32"], result: "i32" },
  gettid: { parameters: [], result: "i32" },
  getpriority: { parameters: ["i32", "u32"], result: "i32" },
  setpriority: { parameters: ["i32", "u32", "i32"], result: "i32" },
  pthread_self: { parameters: [], result: "usize" },
  pthread_setname_np: { parameters: ["usize", "buffer"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
  strerror: { parameters: ["i32"], result: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;

type Libc = Deno.DynamicLibrary<typeof symbols>["symbols"];

let libc: Libc | undefined;

/** Opens libc once per thread (each Worker has its own handle). */
export function loadLibc(): Libc {
  if (!libc) {
    const names = Deno.build.os === "linux" ? ["libc.so.6", "libc.so"] : ["libc.dylib"];
    let lastError: unknown;
    for (const name of names) {
      try {
        libc = Deno.dlopen(name, symbols).symbols;
        return libc;
      } catch (error) {
        lastError = error;
      }
    }
    throw new Error(`cannot load libc (${names.join(", ")}): ${lastError}`);
  }
  return libc;
}

/** The calling thread's errno, read right after a failed call. */
export function lastErrno(): number {
  const pointer = loadLibc().__errno_location();
  return pointer ? new Deno.UnsafePointerView(pointer).getInt32() : 0;
}

/** A failed libc call, with errno and a readable message. */
export class SocketError extends Error {
  /** errno value, e.g. 98. */
  readonly errno: number;
  /** errno name, e.g. `EADDRINUSE`. */
  readonly code: string;

  constructor(operation: string, errno: number, hint = "") {
    const code = ERRNO_NAMES[errno] ?? `errno ${errno}`;
    super(`${operation}: ${describeErrno(errno)} (${code})${hint ? `; ${hint}` : ""}`);
    this.name = "SocketError";
    this.errno = errno;
    this.code = code;
  }
}

/** strerror(3) text for an errno value. */
function describeErrno(errno: number): string {
  const pointer = loadLibc().strerror(errno);
  return pointer ? Deno.UnsafePointerView.getCString(pointer) : `errno ${errno}`;
}

/** Throws a {@link SocketError} built from errno when `result` is negative. */
export function check(result: number | bigint, operation: string, hint = ""): number {
  if (result < 0) throw new SocketError(operation, lastErrno(), hint);
  return Number(result);
}

/** A path as a NUL-terminated C string. */
export function cString(path: string): Uint8Array<ArrayBuffer> {
  return new TextEncoder().encode(`${path}\0`);
}

/**
 * Encodes a filesystem path as a `struct sockaddr_un`; a path starting with `@` names an
 * abstract socket (systemd's `NOTIFY_SOCKET` may be one), whose address length is
 * {@link sockaddrLength}.
 */
export function sockaddrUn(path: string): Uint8Array<ArrayBuffer> {
  const encoded = new TextEncoder().encode(path);
  if (path.startsWith("@")) encoded[0] = 0;
  if (encoded.length > SUN_PATH_MAX) {
    throw new SocketError(
      `socket path ${path}`,
      36,
      `it is ${encoded.length} bytes and sun_path holds at most ${SUN_PATH_MAX}: choose a shorter path`,
    );
  }
  if (encoded.includes(0, path.startsWith("@") ? 1 : 0)) {
    throw new Error(`socket path ${JSON.stringify(path)} holds a NUL byte`);
  }
  const address = new Uint8Array(SOCKADDR_UN_SIZE);
  new DataView(address.buffer).setUint16(0, AF_UNIX, true);
  address.set(encoded, 2);
  return address;
}

/** Bytes of the address {@link sockaddrUn} makes that `bind`, `connect` or `sendto` take. */
export function sockaddrLength(path: string): number {
  // An abstract name is exactly its bytes; a path is NUL-terminated within the structure.
  return path.startsWith("@") ? 2 + new TextEncoder().encode(path).length : SOCKADDR_UN_SIZE;
}

/** Writes a native pointer to `view` at `offset`. */
export function setPointer(view: DataView, offset: number, target: BufferSource | null): void {
  const pointer = target ? Deno.UnsafePointer.of(target) : null;
  view.setBigUint64(offset, pointer ? BigInt(Deno.UnsafePointer.value(pointer)) : 0n, true);
}

/** Sets an int socket option. */
export function setIntOption(fd: number, level: number, name: number, value: number): number {
  const buffer = new Int32Array([value]);
  return loadLibc().setsockopt(fd, level, name, buffer, 4);
}

/** Reads an int socket option. */
export function getIntOption(fd: number, level: number, name: number): number {
  const value = new Int32Array(1);
  const length = new Uint32Array([4]);
  check(loadLibc().getsockopt(fd, level, name, value, length), "getsockopt");
  return value[0];
}

const PRIO_PROCESS = 0;

/** The calling thread's nice value (Linux gives each thread its own). */
export function threadNice(): number {
  const c = loadLibc();
  return c.getpriority(PRIO_PROCESS, c.gettid());
}

/**
 * Sets the calling thread's nice value, clamped to -20..19. Lowering the priority needs no
 * privilege; raising it back does (root, or RLIMIT_NICE). Returns whether the kernel agreed.
 */
export function setThreadNice(nice: number): boolean {
  const c = loadLibc();
  return c.setpriority(PRIO_PROCESS, c.gettid(), Math.max(-20, Math.min(19, nice))) === 0;
}

/**
 * Names the calling thread (at most 15 bytes), as `top -H` and `ps -L` show it. Best effort:
 * returns whether it took.
 */
export function setThreadName(name: string): boolean {
  const c = loadLibc();
  const bytes = new TextEncoder().encode(name).subarray(0, 15);
  const cName = new Uint8Array(bytes.length + 1);
  cName.set(bytes);
  return c.pthread_setname_np(c.pthread_self(), cName) === 0;
}

const O_RDWR = 0o2;
const O_CREAT = 0o100;
const O_CLOEXEC = 0o2000000;
const LOCK_EX = 2;
const LOCK_NB = 4;

/**
 * Takes an exclusive `flock` on `path` (created if missing) without waiting, and returns the
 * descriptor that holds it: close it to release the lock, which the kernel also does when the
 * process dies, however it dies.
 *
 * @throws {SocketError} EWOULDBLOCK (`EAGAIN`) when another process holds the lock
 */
export function lockFile(path: string): number {
  const c = loadLibc();
  const fd = check(
    c.open(cString(path), O_RDWR | O_CREAT | O_CLOEXEC, 0o600),
    `open ${path}`,
  );
  if (c.flock(fd, LOCK_EX | LOCK_NB) < 0) {
    const errno = lastErrno();
    c.close(fd);
    throw new SocketError(`lock ${path}`, errno);
  }
  return fd;
}

/** Releases a lock taken by {@link lockFile}. */
export function unlockFile(fd: number): void {
  loadLibc().close(fd);
}

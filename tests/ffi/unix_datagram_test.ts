import assert from "node:assert/strict";
import {
  adoptDatagramSocket,
  BatchReceiver,
  bindDatagramSocket,
  closeSocket,
  DatagramSender,
  UNKNOWN_SENDER,
  unlinkSocket,
} from "../../ffi/unix_datagram.ts";
import {
  AF_UNIX,
  check,
  loadLibc,
  SOCK_CLOEXEC,
  SOCK_DGRAM,
  sockaddrUn,
  SocketError,
} from "../../ffi/libc.ts";
import { type SpooledReceiver, startSpooledReceiver } from "../support/receiver.ts";
import { foreignSenderUnavailable, sendAs } from "../support/foreign_sender.ts";
import { waitFor } from "../support/wait.ts";

const options = { mode: 0o660, receiveBufferBytes: 1 << 20 };

async function withDir(test: (dir: string) => Promise<void> | void) {
  const dir = await Deno.makeTempDir({ prefix: "tbg-ffi-" });
  try {
    await test(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("bind sets the mode and a receive buffer, and close/unlink clean up", () =>
  withDir((dir) => {
    const path = `${dir}/events.sock`;
    const socket = bindDatagramSocket(path, options);
    try {
      const info = Deno.lstatSync(path);
      assert.ok(info.isSocket);
      assert.equal(info.mode! & 0o777, 0o660);
      assert.ok(socket.receiveBufferBytes >= 1 << 20, String(socket.receiveBufferBytes));
    } finally {
      closeSocket(socket.fd);
      unlinkSocket(path);
    }
    assert.throws(() => Deno.lstatSync(path), Deno.errors.NotFound);
  }));

Deno.test("a stale socket file is replaced", () =>
  withDir((dir) => {
    const path = `${dir}/events.sock`;
    const stale = bindDatagramSocket(path, options);
    closeSocket(stale.fd); // the file stays, nobody listens
    assert.ok(Deno.lstatSync(path).isSocket);
    const socket = bindDatagramSocket(path, options);
    closeSocket(socket.fd);
    unlinkSocket(path);
  }));

Deno.test("a live listener is not displaced", () =>
  withDir((dir) => {
    const path = `${dir}/events.sock`;
    const live = bindDatagramSocket(path, options);
    try {
      assert.throws(() => bindDatagramSocket(path, options), /another process is receiving/);
      assert.ok(Deno.lstatSync(path).isSocket);
    } finally {
      closeSocket(live.fd);
      unlinkSocket(path);
    }
  }));

Deno.test("a regular file at the path is an error and is left alone", () =>
  withDir((dir) => {
    const path = `${dir}/events.sock`;
    Deno.writeTextFileSync(path, "precious");
    assert.throws(() => bindDatagramSocket(path, options), /not a socket; refusing to remove/);
    assert.equal(Deno.readTextFileSync(path), "precious");
  }));

Deno.test("a path too long for sun_path is refused with errno text", () => {
  assert.throws(
    () => bindDatagramSocket(`/tmp/${"x".repeat(110)}.sock`, options),
    (error: unknown) => {
      assert.ok(error instanceof SocketError);
      assert.equal(error.code, "ENAMETOOLONG");
      assert.match(error.message, /File name too long.*at most 107/);
      return true;
    },
  );
});

Deno.test("bind errors carry errno as a readable message", () => {
  assert.throws(
    () => bindDatagramSocket("/nonexistent-dir-tbg/events.sock", options),
    (error: unknown) =>
      error instanceof SocketError && error.code === "ENOENT" &&
      error.message === "bind /nonexistent-dir-tbg/events.sock: No such file or directory (ENOENT)",
  );
  const denied = new SocketError("bind /run/x.sock", 13);
  assert.equal(denied.message, "bind /run/x.sock: Permission denied (EACCES)");
  assert.equal(
    new SocketError("bind x", 98).message,
    "bind x: Address already in use (EADDRINUSE)",
  );
});

Deno.test("the receive thread spools every datagram in order, flags oversized ones, and unlinks on stop", () =>
  withDir(async (dir) => {
    const path = `${dir}/events.sock`;
    const receiver = startSpooledReceiver({ path, mode: 0o600, receiveBufferBytes: 4 << 20 });
    const sender = new DatagramSender(path);
    try {
      const total = 2000;
      for (let i = 0; i < total; i++) {
        const bytes = new TextEncoder().encode(`message ${i}`);
        await waitFor(() => sender.send(bytes), { what: `send ${i}` });
      }
      // The queue may still be full of the small ones: wait for room, as for them.
      const large = new Uint8Array(64 * 1024);
      await waitFor(() => sender.send(large), { what: "a 64 KiB datagram is sendable" });
      await waitFor(() => receiver.spool.signals.head() === total + 1, { what: "all datagrams" });
      const records = receiver.records();
      assert.deepEqual(
        records.slice(0, total).map((record) => new TextDecoder().decode(record.bytes)),
        Array.from({ length: total }, (_, i) => `message ${i}`),
      );
      assert.deepEqual(records.map((record) => record.truncated).indexOf(true), total);
      assert.equal(receiver.counts().received, total + 1);
    } finally {
      sender.close();
      await receiver.stop();
    }
    assert.throws(() => Deno.lstatSync(path), Deno.errors.NotFound);
  }));

Deno.test("sending with nobody listening fails at once instead of blocking", () =>
  withDir((dir) => {
    const sender = new DatagramSender(`${dir}/nobody.sock`);
    try {
      assert.equal(sender.send(new TextEncoder().encode("{}")), false);
    } finally {
      sender.close();
    }
  }));

Deno.test("idle waits end in 0 without consulting errno, and data is read after them", () =>
  withDir((dir) => {
    const path = `${dir}/events.sock`;
    const socket = bindDatagramSocket(path, options);
    const sender = new DatagramSender(path);
    try {
      const receiver = new BatchReceiver(socket.fd, 4, 1024, 5);
      // Many empty waits: each must return 0, never throw.
      for (let i = 0; i < 50; i++) assert.equal(receiver.receive(true), 0);
      assert.ok(sender.send(new TextEncoder().encode("after the wait")));
      assert.equal(receiver.receive(true), 1);
      assert.equal(new TextDecoder().decode(receiver.datagram(0).bytes), "after the wait");
      assert.equal(receiver.receive(false), 1, "still there until consumed");
      receiver.consume();
      assert.equal(receiver.receive(false), 0);
    } finally {
      sender.close();
      closeSocket(socket.fd);
      unlinkSocket(path);
    }
  }));

Deno.test("a receive on a closed descriptor fails loudly instead of looping", () =>
  withDir((dir) => {
    const path = `${dir}/events.sock`;
    const socket = bindDatagramSocket(path, options);
    closeSocket(socket.fd);
    unlinkSocket(path);
    assert.throws(
      () => new BatchReceiver(socket.fd, 4, 1024, 5).receive(true),
      /SO_PEEK_OFF: Bad file descriptor|poll on the event socket \(revents 0x20\)/,
    );
  }));

Deno.test("a datagram stays on the socket until consumed: a receiver made after a crash gets it again", () =>
  withDir((dir) => {
    const path = `${dir}/events.sock`;
    const socket = bindDatagramSocket(path, options);
    const sender = new DatagramSender(path);
    const text = (receiver: BatchReceiver, count: number) =>
      Array.from({ length: count }, (_, i) => new TextDecoder().decode(receiver.datagram(i).bytes));
    try {
      for (const word of ["one", "two", "three"]) {
        assert.ok(sender.send(new TextEncoder().encode(word)));
      }
      const crashed = new BatchReceiver(socket.fd, 2, 1024, 1000);
      assert.deepEqual(text(crashed, crashed.receive(true)), ["one", "two"]);
      crashed.consume();
      assert.deepEqual(text(crashed, crashed.receive(true)), ["three"]);
      // Not consumed: the process dies here. The socket lives on (its holder keeps it).
      const next = new BatchReceiver(socket.fd, 4, 1024, 1000);
      assert.ok(sender.send(new TextEncoder().encode("four")));
      assert.deepEqual(text(next, next.receive(true)), ["three", "four"]);
      next.consume();
      assert.equal(next.receive(false), 0);
    } finally {
      sender.close();
      closeSocket(socket.fd);
      unlinkSocket(path);
    }
  }));

Deno.test("an oversized datagram ends its batch and the next one is read whole", () =>
  withDir((dir) => {
    const path = `${dir}/events.sock`;
    const socket = bindDatagramSocket(path, options);
    const sender = new DatagramSender(path);
    try {
      const big = "x".repeat(3000);
      for (const word of ["small", big, "after"]) {
        assert.ok(sender.send(new TextEncoder().encode(word)));
      }
      const receiver = new BatchReceiver(socket.fd, 8, 1024, 1000);
      assert.equal(receiver.receive(true), 2);
      assert.equal(new TextDecoder().decode(receiver.datagram(0).bytes), "small");
      assert.equal(receiver.datagram(1).truncated, true);
      assert.equal(receiver.datagram(1).bytes.length, 1024);
      receiver.consume();
      assert.equal(receiver.receive(true), 1);
      assert.equal(new TextDecoder().decode(receiver.datagram(0).bytes), "after");
      assert.equal(receiver.datagram(0).truncated, false);
      receiver.consume();
      assert.equal(receiver.receive(false), 0);
    } finally {
      sender.close();
      closeSocket(socket.fd);
      unlinkSocket(path);
    }
  }));

Deno.test("SO_PASSCRED: every datagram carries its sender's pid, uid and gid", () =>
  withDir((dir) => {
    const path = `${dir}/events.sock`;
    const socket = bindDatagramSocket(path, options);
    const sender = new DatagramSender(path);
    const me = { pid: Deno.pid, uid: Deno.uid()!, gid: Deno.gid()! };
    try {
      const receiver = new BatchReceiver(socket.fd, 4, 1024, 1000);
      // Batches of 3, 4 and 2: each call must see credentials in every slot it fills,
      // including slots an earlier call left with a shortened msg_controllen.
      for (const size of [3, 4, 2]) {
        for (let i = 0; i < size; i++) assert.ok(sender.send(new TextEncoder().encode(`${i}`)));
        assert.equal(receiver.receive(true), size);
        for (let i = 0; i < size; i++) {
          assert.equal(new TextDecoder().decode(receiver.datagram(i).bytes), `${i}`);
          assert.deepEqual(receiver.credentials(i), me);
          assert.equal(receiver.senderUid(i), me.uid);
        }
        receiver.consume();
      }
    } finally {
      sender.close();
      closeSocket(socket.fd);
      unlinkSocket(path);
    }
  }));

Deno.test("a socket without SO_PASSCRED yields datagrams of unknown sender", () =>
  withDir((dir) => {
    const path = `${dir}/events.sock`;
    const libc = loadLibc();
    const fd = check(libc.socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0), "socket");
    const sender = new DatagramSender(path);
    try {
      const address = sockaddrUn(path);
      check(libc.bind(fd, address, address.length), "bind");
      const receiver = new BatchReceiver(fd, 4, 1024, 1000);
      assert.ok(sender.send(new TextEncoder().encode("anonymous")));
      assert.equal(receiver.receive(true), 1);
      assert.equal(new TextDecoder().decode(receiver.datagram(0).bytes), "anonymous");
      assert.equal(receiver.senderUid(0), UNKNOWN_SENDER);
      assert.equal(receiver.credentials(0), undefined);
    } finally {
      sender.close();
      closeSocket(fd);
      unlinkSocket(path);
    }
  }));

Deno.test("SOCKET_GROUP: the socket file gets the group, then the mode", () =>
  withDir(async (dir) => {
    const path = `${dir}/events.sock`;
    const gid = Deno.uid() === 0 ? 4242 : Deno.gid()!; // any gid as root, else our own
    const receiver = startSpooledReceiver({
      path,
      mode: 0o660,
      group: gid,
      receiveBufferBytes: 1 << 20,
    });
    try {
      const info = Deno.lstatSync(path);
      assert.ok(info.isSocket);
      assert.equal(info.gid, gid);
      assert.equal(info.uid, Deno.uid());
      assert.equal(info.mode! & 0o777, 0o660);
    } finally {
      await receiver.stop();
    }
  }));

const foreignSender = foreignSenderUnavailable();
if (foreignSender) {
  console.warn(`tests/ffi: sender-authentication tests with another uid skipped: ${foreignSender}`);
}
const NOBODY = { uid: 65534, gid: 65534 };

/** Runs a receiver on a socket anyone may write to. */
async function withOpenReceiver(
  allowedSenderUids: readonly number[],
  test: (path: string, receiver: SpooledReceiver) => Promise<void>,
) {
  await withDir(async (dir) => {
    await Deno.chmod(dir, 0o755); // the other uid must reach the socket
    const path = `${dir}/events.sock`;
    const receiver = startSpooledReceiver({
      path,
      mode: 0o666,
      allowedSenderUids,
      receiveBufferBytes: 1 << 20,
    });
    try {
      await test(path, receiver);
    } finally {
      await receiver.stop();
    }
  });
}

function sendAsMe(path: string, messages: string[]): void {
  const sender = new DatagramSender(path);
  try {
    for (const message of messages) assert.ok(sender.send(new TextEncoder().encode(message)));
  } finally {
    sender.close();
  }
}

Deno.test({
  name: "ALLOWED_SENDER_UIDS=0: root's datagrams arrive, uid 65534's are refused and counted",
  ignore: foreignSender !== undefined,
  fn: () =>
    withOpenReceiver([0], async (path, receiver) => {
      sendAsMe(path, ["root-1"]);
      assert.equal(receiver.counts().lastRefusedUid, -1, "none refused yet");
      const pid = await sendAs(NOBODY, path, ["nobody-1", "nobody-2"]);
      sendAsMe(path, ["root-2"]);
      await waitFor(() => receiver.counts().received === 4, { what: "four datagrams taken" });
      assert.deepEqual(receiver.texts(), ["root-1", "root-2"], "only root's are spooled");
      const counts = receiver.counts();
      assert.equal(counts.refused, 2);
      assert.equal(counts.lastRefusedUid, NOBODY.uid);
      assert.equal(counts.lastRefusedPid, pid);
    }),
});

Deno.test({
  name: "ALLOWED_SENDER_UIDS empty: datagrams from root and from uid 65534 both arrive",
  ignore: foreignSender !== undefined,
  fn: () =>
    withOpenReceiver([], async (path, receiver) => {
      sendAsMe(path, ["root-1"]);
      await sendAs(NOBODY, path, ["nobody-1"]);
      sendAsMe(path, ["root-2"]);
      await waitFor(() => receiver.spool.signals.head() === 3, { what: "three datagrams" });
      assert.deepEqual(receiver.texts(), ["root-1", "nobody-1", "root-2"]);
      assert.equal(receiver.counts().refused, 0);
    }),
});

Deno.test({
  name: "SOCKET_GROUP: a group we may not give fails with the path and errno text",
  // Root without CAP_CHOWN (dropped from the bounding set) may not chgrp to a foreign group.
  ignore: foreignSender !== undefined,
  fn: () =>
    withDir(async (dir) => {
      const path = `${dir}/events.sock`;
      const module = new URL("../../ffi/unix_datagram.ts", import.meta.url).href;
      const script = `
        import { bindDatagramSocket } from ${JSON.stringify(module)};
        try {
          bindDatagramSocket(${JSON.stringify(path)}, {
            mode: 0o660, receiveBufferBytes: 1 << 20, group: 4242,
          });
          console.log("bound");
        } catch (error) {
          console.log(error.message);
        }`;
      const output = await new Deno.Command("setpriv", {
        args: ["--bounding-set=-chown", Deno.execPath(), "eval", script],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const stderr = new TextDecoder().decode(output.stderr);
      assert.ok(output.success, stderr);
      assert.equal(
        new TextDecoder().decode(output.stdout).trim(),
        `chown ${path} to group 4242: Operation not permitted (EPERM); changing a file's ` +
          `group to one we are not a member of needs CAP_CHOWN`,
      );
      assert.throws(() => Deno.lstatSync(path), Deno.errors.NotFound, "the socket is removed");
    }),
});

Deno.test("a passed-in socket is taken when it is a bound AF_UNIX datagram socket, refused otherwise", () =>
  withDir((dir) => {
    const path = `${dir}/held.sock`;
    const libc = loadLibc();
    const held = bindDatagramSocket(path, options);
    const stream = check(libc.socket(AF_UNIX, 1, /* SOCK_STREAM */ 0), "socket");
    const unbound = check(libc.socket(AF_UNIX, SOCK_DGRAM, 0), "socket");
    const file = check(
      libc.open(new TextEncoder().encode(`${dir}/file\0`), 0o100 | 0o2, 0o600),
      "open",
    );
    try {
      const taken = adoptDatagramSocket(held.fd, { receiveBufferBytes: 1024 * 1024 });
      assert.equal(taken.path, path);
      assert.equal(taken.inherited, true);
      assert.ok(taken.receiveBufferBytes > 0);
      assert.throws(
        () => adoptDatagramSocket(stream, { receiveBufferBytes: 1024 }),
        /descriptor \d+ passed in is not an AF_UNIX datagram socket/,
      );
      assert.throws(
        () => adoptDatagramSocket(unbound, { receiveBufferBytes: 1024 }),
        /is not bound/,
      );
      assert.throws(
        () => adoptDatagramSocket(file, { receiveBufferBytes: 1024 }),
        /descriptor \d+ passed in is not a socket/,
      );
    } finally {
      for (const fd of [stream, unbound, file]) libc.close(fd);
      closeSocket(held.fd);
      unlinkSocket(path);
    }
  }));

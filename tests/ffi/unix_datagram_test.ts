import assert from "node:assert/strict";
import {
  BatchReceiver,
  bindDatagramSocket,
  closeSocket,
  DatagramSender,
  unlinkSocket,
} from "../../ffi/unix_datagram.ts";
import { SocketError } from "../../ffi/libc.ts";
import { startReceiver } from "../../src/receiver.ts";
import { forEachDatagram } from "../../src/datagram_batch.ts";
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

Deno.test("the receive thread delivers every datagram in order, flags oversized ones, and unlinks on stop", () =>
  withDir(async (dir) => {
    const path = `${dir}/events.sock`;
    const received: string[] = [];
    let truncated = 0;
    const receiver = startReceiver({
      path,
      mode: 0o600,
      receiveBufferBytes: 4 << 20,
      onBatch: (batch) =>
        forEachDatagram(batch, (bytes, cut) => {
          if (cut) truncated++;
          else received.push(new TextDecoder().decode(bytes));
        }),
      onError: (message) => assert.fail(message),
    });
    const sender = new DatagramSender(path);
    try {
      const total = 2000;
      for (let i = 0; i < total; i++) {
        const bytes = new TextEncoder().encode(`message ${i}`);
        await waitFor(() => sender.send(bytes), { what: `send ${i}` });
      }
      assert.ok(sender.send(new Uint8Array(64 * 1024)), "a 64 KiB datagram is sendable");
      await waitFor(() => received.length === total && truncated === 1, {
        what: "all datagrams",
      });
      assert.deepEqual(received, Array.from({ length: total }, (_, i) => `message ${i}`));
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
    const receiver = new BatchReceiver(socket.fd, 4, 1024, 5);
    assert.throws(() => receiver.receive(true), /poll on the event socket \(revents 0x20\)/);
  }));

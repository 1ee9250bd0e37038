import assert from "node:assert/strict";
import { encodeCommands, RespConnection, RespError } from "../../src/sinks/redis/resp.ts";
import { startRedis } from "../support/services.ts";

Deno.test("bulk lengths count UTF-8 bytes, surrogate pairs included", () => {
  const text = new TextDecoder().decode(encodeCommands([["SET", "k", "é€😀"]]));
  assert.equal(text, "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$9\r\né€😀\r\n");
});

Deno.test("replies come back in order, error replies in place, across chunk boundaries", async () => {
  const redis = await startRedis();
  const connection = await RespConnection.connect(redis.url);
  try {
    const big = "x".repeat(300_000);
    const replies = await connection.pipeline([
      ["SET", "k", big],
      ["GET", "k"],
      ["GET", "missing"],
      ["NOSUCHCOMMAND"],
      ["RPUSH", "list", "a", "ü"],
      ["LRANGE", "list", "0", "-1"],
    ]);
    assert.equal(replies[0], "OK");
    assert.equal(replies[1], big);
    assert.equal(replies[2], null);
    assert.ok(replies[3] instanceof RespError);
    assert.match((replies[3] as RespError).message, /unknown command/);
    assert.equal(replies[4], 2);
    assert.deepEqual(replies[5], ["a", "ü"]);
  } finally {
    connection.close();
    await redis.stop();
  }
});

Deno.test("the URL's password and database are used", async () => {
  const redis = await startRedis({ password: "s3cr:et" });
  try {
    const url = redis.url.replace(/\/0$/, "/3");
    const connection = await RespConnection.connect(url);
    try {
      await connection.pipeline([["SET", "where", "db3"]]);
      assert.deepEqual(await connection.pipeline([["GET", "where"]]), ["db3"]);
    } finally {
      connection.close();
    }
    const zero = await RespConnection.connect(redis.url);
    try {
      assert.deepEqual(await zero.pipeline([["GET", "where"]]), [null]);
    } finally {
      zero.close();
    }
    await assert.rejects(
      RespConnection.connect(redis.url.replace("s3cr%3Aet", "wrong")),
      /WRONGPASS|invalid password/,
    );
  } finally {
    await redis.stop();
  }
});

Deno.test("a dropped connection throws and marks itself broken", async () => {
  const redis = await startRedis();
  const connection = await RespConnection.connect(redis.url);
  try {
    await redis.kill();
    await assert.rejects(connection.pipeline([["PING"]]));
    assert.equal(connection.broken, true);
    await assert.rejects(connection.pipeline([["PING"]]));
  } finally {
    connection.close();
    await redis.stop();
  }
});

Deno.test("send finds the first error reply among many, its index and its text", async () => {
  const redis = await startRedis();
  const connection = await RespConnection.connect(redis.url);
  try {
    // Enough replies to arrive in several reads, an error deep among them, a second later.
    const commands: string[][] = [];
    for (let i = 0; i < 20_000; i++) commands.push(["SET", `k${i}`, "v".repeat(20)]);
    commands[12_345] = ["NOSUCHCOMMAND", "x"];
    commands[15_000] = ["ALSONOTACOMMAND"];
    commands.push(["GET", "k19999"]);
    const outcome = await connection.send(encodeCommands(commands), commands.length);
    assert.equal(outcome.failedAt, 12_345);
    assert.match(outcome.error!.message, /unknown command 'NOSUCHCOMMAND'/);
    // Every reply was taken: the next round trip reads its own.
    assert.deepEqual(await connection.pipeline([["GET", "k19999"]]), ["v".repeat(20)]);
    const clean = await connection.send(
      encodeCommands([["PING"], ["LRANGE", "none", "0", "-1"]]),
      2,
    );
    assert.equal(clean.failedAt, -1);
    assert.equal(clean.error, undefined);
  } finally {
    connection.close();
    await redis.stop();
  }
});

Deno.test("a server that never answers costs one deadline, then the connection is broken", async () => {
  // Accepts and reads, never replies.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted = (async () => {
    const conn = await listener.accept();
    const sink = new Uint8Array(4096);
    while ((await conn.read(sink).catch(() => null)) !== null) { /* swallow */ }
    conn.close();
  })();
  const { port } = listener.addr as Deno.NetAddr;
  const connection = await RespConnection.connect(`redis://127.0.0.1:${port}`);
  try {
    const started = performance.now();
    await assert.rejects(connection.send(encodeCommands([["PING"]]), 1, 300), /timed out/);
    const waited = performance.now() - started;
    console.log(`gave up after ${waited.toFixed(0)} ms (deadline 300 ms)`);
    assert.ok(waited >= 300, `gave up before the deadline: ${waited} ms`);
    assert.equal(connection.broken, true);
  } finally {
    connection.close();
    listener.close();
    await accepted;
  }
});

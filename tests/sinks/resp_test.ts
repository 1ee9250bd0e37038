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

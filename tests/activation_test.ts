import assert from "node:assert/strict";
import { passedEventSocket } from "../src/source/activation.ts";
import { ConfigError, loadConfig } from "../src/ops/config.ts";

const PID = 4242;

Deno.test("socket activation: one descriptor passed to this process is descriptor 3", () => {
  assert.equal(passedEventSocket({ LISTEN_FDS: "1", LISTEN_PID: String(PID) }, PID), 3);
  assert.equal(
    passedEventSocket({ LISTEN_FDS: "1", LISTEN_PID: String(PID), LISTEN_FDNAMES: "x" }, PID),
    3,
  );
});

Deno.test("socket activation: variables meant for another process, or none, pass nothing", () => {
  assert.equal(passedEventSocket({}, PID), undefined);
  assert.equal(passedEventSocket({ LISTEN_FDS: "1", LISTEN_PID: "1" }, PID), undefined);
  assert.equal(passedEventSocket({ LISTEN_FDS: "1" }, PID), undefined);
});

Deno.test("socket activation: of several descriptors, the one named events is taken", () => {
  const env = { LISTEN_FDS: "3", LISTEN_PID: String(PID), LISTEN_FDNAMES: "metrics:other:events" };
  assert.equal(passedEventSocket(env, PID), 5);
});

Deno.test("socket activation: nonsense in LISTEN_FDS or no events name stops start-up, naming it", () => {
  const problems = (env: Record<string, string>) => {
    try {
      loadConfig(env, PID);
    } catch (error) {
      assert.ok(error instanceof ConfigError);
      return error.message;
    }
    assert.fail("loadConfig accepted it");
  };
  assert.match(problems({ LISTEN_FDS: "two", LISTEN_PID: String(PID) }), /LISTEN_FDS must be/);
  assert.match(
    problems({ LISTEN_FDS: "2", LISTEN_PID: String(PID), LISTEN_FDNAMES: "a:b" }),
    /LISTEN_FDNAMES names none of them "events"/,
  );
  assert.equal(loadConfig({ LISTEN_FDS: "1", LISTEN_PID: String(PID) }, PID).passedSocketFd, 3);
  assert.equal(loadConfig({}, PID).passedSocketFd, undefined);
});

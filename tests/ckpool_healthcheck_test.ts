/**
 * The ckpool image's health check (`ckpool/healthcheck.sh`) where no ckpool runs: it says
 * unhealthy, and why. That it says healthy against the real patched ckpool is checked by the
 * end-to-end test (`CKPOOL_SRC`).
 */
import assert from "node:assert/strict";
import { freePort } from "./support/services.ts";

const script = new URL("../ckpool/healthcheck.sh", import.meta.url).pathname;

async function check(env: Record<string, string>) {
  const out = await new Deno.Command("bash", {
    args: [script],
    env,
    stdout: "piped",
    stderr: "piped",
  })
    .output();
  return { code: out.code, said: new TextDecoder().decode(out.stderr) };
}

Deno.test("ckpool health check: no control socket is unhealthy, naming the socket", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tbg-ckp-" });
  try {
    // `true` stands in for ckpmsg: it answers nothing, as ckpmsg does when ckpool is down.
    const { code, said } = await check({ CKPOOL_SOCKET_DIR: dir, CKPMSG: "true" });
    assert.equal(code, 1);
    assert.match(said, new RegExp(`does not answer ping on ${dir}/listener`));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ckpool health check: a pong without a Stratum port is unhealthy, naming the port", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tbg-ckp-" });
  const fake = `${dir}/ckpmsg`;
  await Deno.writeTextFile(fake, "#!/bin/sh\necho 'Received response: pong' >&2\n", {
    mode: 0o755,
  });
  const port = freePort();
  try {
    const { code, said } = await check({ CKPMSG: fake, STRATUM_PORT: String(port) });
    assert.equal(code, 1);
    assert.match(said, new RegExp(`nothing accepts Stratum connections on port ${port}`));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

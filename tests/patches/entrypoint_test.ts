/**
 * The ckpool image's entrypoint renders the config from the environment: credentials from
 * .env reach ckpool's JSON config intact, whatever characters they hold.
 */
import assert from "node:assert/strict";

const entrypoint = new URL("../../ckpool/docker-entrypoint.sh", import.meta.url).pathname;
const template = new URL("../../ckpool/config/ckpool-signet.conf", import.meta.url).pathname;

async function run(env: Record<string, string>) {
  const dir = await Deno.makeTempDir({ prefix: "tbg-entrypoint-" });
  try {
    // A stand-in ckpool that records how it was called.
    await Deno.writeTextFile(`${dir}/ckpool`, `#!/bin/sh\nprintf '%s\\n' "$@" > "${dir}/args"\n`);
    await Deno.chmod(`${dir}/ckpool`, 0o755);
    const output = await new Deno.Command("sh", {
      args: [entrypoint, "-B", "-s", "/var/run/ckpool"],
      env: {
        PATH: `${dir}:/usr/bin:/bin`,
        CKPOOL_CONFIG_TEMPLATE: template,
        CKPOOL_CONFIG: `${dir}/ckpool.conf`,
        ...env,
      },
      clearEnv: true,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const read = (name: string) => Deno.readTextFile(`${dir}/${name}`).catch(() => undefined);
    return {
      code: output.code,
      stderr: new TextDecoder().decode(output.stderr),
      config: await read("ckpool.conf"),
      mode: await Deno.stat(`${dir}/ckpool.conf`).then((s) => s.mode! & 0o777, () => undefined),
      args: (await read("args"))?.trim().split("\n"),
      dir,
    };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("credentials with JSON and shell metacharacters arrive intact; ckpool gets the rendered config", async () => {
  const password = `p"a\\s&s/w|o$rd\`'x\\n`;
  const result = await run({ BITCOIN_RPC_USER: 'tbg \\ "user"', BITCOIN_RPC_PASSWORD: password });
  assert.equal(result.code, 0, result.stderr);
  const config = JSON.parse(result.config!);
  assert.equal(config.btcd[0].auth, 'tbg \\ "user"');
  assert.equal(config.btcd[0].pass, password);
  assert.equal(config.event_socket_path, "/tmp/ckpool/events.sock");
  assert.equal(result.mode, 0o600, "the rendered config holds a secret");
  assert.deepEqual(result.args, ["-c", `${result.dir}/ckpool.conf`, "-B", "-s", "/var/run/ckpool"]);
});

Deno.test("a missing credential stops the container naming the variable", async () => {
  const result = await run({ BITCOIN_RPC_USER: "tbg" });
  assert.notEqual(result.code, 0);
  assert.match(result.stderr, /BITCOIN_RPC_PASSWORD/);
  assert.equal(result.args, undefined, "ckpool was not started");
});

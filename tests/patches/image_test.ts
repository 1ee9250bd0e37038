/**
 * The ckpool image's files agree with the kit and with the collector: pinned commit, solo flag,
 * config, socket path, license. (No Docker engine runs here; the image itself is not built.)
 */
import assert from "node:assert/strict";
import { lockValue } from "../support/ckpool_build.ts";
import { loadConfig } from "../../src/ops/config.ts";

const root = new URL("../../", import.meta.url);
const read = (path: string) => Deno.readTextFile(new URL(path, root));

function dockerArg(dockerfile: string, name: string): string {
  const m = new RegExp(`^ARG ${name}=(\\S+)$`, "m").exec(dockerfile);
  assert.ok(m, `no ARG ${name}= in ckpool/Dockerfile`);
  return m[1];
}

Deno.test("the Dockerfile builds the locked commit with the kit and runs ckpool solo", async () => {
  const dockerfile = await read("ckpool/Dockerfile");
  assert.equal(dockerArg(dockerfile, "CKPOOL_COMMIT"), await lockValue("commit"));
  assert.equal(dockerArg(dockerfile, "CKPOOL_REPO"), await lockValue("repository"));
  assert.match(dockerfile, /^COPY patches\/ \/build\/patches\/$/m);
  assert.match(dockerfile, /^RUN bash \/build\/patches\/apply-patches\.sh \/build\/ckpool$/m);
  assert.match(dockerfile, /\.\/configure --without-ckdb/);
  const instructions = dockerfile.split("\n").filter((l) => !l.trimStart().startsWith("#"));
  assert.ok(!instructions.some((l) => l.includes("make install")), "make install runs setcap");
  assert.doesNotMatch(dockerfile, /TBG_SKIP_VERIFY/);
  assert.equal(dockerfile.match(/^FROM /gm)?.length, 2, "two stages");
  assert.match(dockerfile, /^USER ckpool$/m);
  assert.match(dockerfile, /^ENTRYPOINT \["tbg-ckpool-entrypoint"\]$/m);
  assert.match(
    dockerfile,
    /^COPY ckpool\/docker-entrypoint\.sh \/usr\/local\/bin\/tbg-ckpool-entrypoint$/m,
  );
  const cmd = JSON.parse(/^CMD (\[.*\])$/m.exec(dockerfile)![1]) as string[];
  assert.ok(cmd.includes("-B"), "solo mode is -B");
  assert.ok(!cmd.includes("-S"), "-S is not a solo flag");
  // The entrypoint's default template path.
  assert.match(
    dockerfile,
    /^COPY ckpool\/config\/ckpool-signet\.conf \/etc\/ckpool\/ckpool-signet\.conf$/m,
  );
});

Deno.test("the signet config sends events where the collector listens by default", async () => {
  const conf = JSON.parse(await read("ckpool/config/ckpool-signet.conf"));
  const collectorDefault = loadConfig({}).socketPath;
  assert.equal(conf.event_socket_path, collectorDefault);
  const header = await read("patches/tbg_events.h");
  assert.ok(header.includes(`#define TBG_DEFAULT_SOCKET_PATH "${collectorDefault}"`));
  assert.deepEqual(conf.serverurl, ["0.0.0.0:3333"]);
  assert.equal(conf.btcd[0].url, "bitcoin-signet:38332");
  assert.match(conf.btcaddress, /^tb1q/);
});

Deno.test("ckpool/LICENSE is the full GPL v3", async () => {
  const license = await read("ckpool/LICENSE");
  assert.match(license, /^\s+GNU GENERAL PUBLIC LICENSE\n\s+Version 3, 29 June 2007\n/);
  assert.match(license, /END OF TERMS AND CONDITIONS/);
  const debian = await Deno.readTextFile("/usr/share/common-licenses/GPL-3").catch(() => null);
  if (debian !== null) assert.equal(license, debian);
});

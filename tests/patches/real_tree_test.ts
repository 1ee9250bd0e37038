/**
 * The kit on real upstream ckpool: CKPOOL_SRC must be a clean checkout of the pinned commit
 * (patches/UPSTREAM.lock; the public mirror github.com/skaisser/ckpool has it). The kit is
 * applied to a cached copy, which is built with autotools (tests/support/ckpool_build.ts), and
 * every hook is checked in place; the built ckpool then starts and reads event_socket_path.
 *
 *   CKPOOL_SRC=/path/to/ckpool deno test --allow-all tests/patches/
 */
import assert from "node:assert/strict";
import {
  buildPatchedCkpool,
  type CkpoolBuild,
  KIT_DIR,
  lockValue,
} from "../support/ckpool_build.ts";
import { waitFor } from "../support/wait.ts";

const SRC = Deno.env.get("CKPOOL_SRC");
const ignore = !SRC;
if (ignore) {
  console.log(
    "tests/patches/real_tree_test.ts: skipped, CKPOOL_SRC is not set. To run it, point CKPOOL_SRC " +
      "at a clean checkout of the commit in patches/UPSTREAM.lock, e.g. git clone " +
      "https://github.com/skaisser/ckpool && git -C ckpool checkout <commit>, then " +
      "CKPOOL_SRC=$PWD/ckpool deno test --allow-all tests/patches/",
  );
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

let building: Promise<CkpoolBuild> | undefined;
const build = () => (building ??= buildPatchedCkpool(SRC!));

async function run(cmd: string, args: string[]) {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** Body of the function or struct opened by the line `head` (trimmed), as lines. */
function body(text: string, head: string): string[] {
  const lines = text.split("\n");
  const start = lines.findIndex((l) => l.trim() === head);
  assert.ok(start >= 0, `no "${head}"`);
  const end = lines.findIndex((l, i) => i > start && /^};?$/.test(l));
  return lines.slice(start, end + 1).map((l) => l.trim());
}

/** Asserts that `hook` sits right before or after `anchor` in `lines`, `count` times. */
function assertHook(
  lines: string[],
  anchor: string,
  hook: RegExp,
  side: "before" | "after",
  count = 1,
) {
  const at = lines.flatMap((l, i) => (l === anchor ? [i] : []));
  assert.equal(at.length, count, `${anchor} found ${at.length} times`);
  for (const i of at) {
    const next = lines[side === "after" ? i + 1 : i - 1];
    assert.match(next, hook, `${side} ${anchor}`);
  }
  assert.equal(lines.filter((l) => hook.test(l)).length, count, `${hook} count`);
}

Deno.test({
  name: "CKPOOL_SRC is the pinned upstream commit and every anchor is found there",
  ignore,
  async fn() {
    const head = await run("git", ["-C", SRC!, "rev-parse", "HEAD"]);
    if (head.code === 0) assert.equal(head.stdout.trim(), await lockValue("commit"));
    const check = await run(`${KIT_DIR}/apply-patches.sh`, ["--check", SRC!]);
    assert.equal(check.code, 0, check.stderr);
    assert.match(check.stdout, /all anchors found/);
  },
});

Deno.test({
  name: "the patched tree builds with autotools and has every hook in place",
  ignore,
  async fn() {
    const b = await build();
    console.log(
      `patched ckpool ${
        b.cached ? "reused from cache, built" : "built"
      } in ${b.seconds} s: ${b.ckpool}`,
    );
    const info = await Deno.stat(b.ckpool);
    assert.ok(info.isFile && (info.mode! & 0o111) !== 0, "ckpool is not executable");
    for (const tool of ["ckpmsg", "notifier"]) await Deno.stat(`${b.binDir}/${tool}`);

    const nm = await run("nm", [b.ckpool]);
    if (nm.code === 0) {
      for (const fn of ["tbg_init_events", "tbg_emit_share_submitted", "tbg_emit_block_found"]) {
        assert.match(nm.stdout, new RegExp(` T ${fn}$`, "m"), `${fn} not in the binary`);
      }
    }

    const src = `${b.treeDir}/src`;
    const s = await Deno.readTextFile(`${src}/stratifier.c`);
    const hook = (name: string) => new RegExp(`^(return )?${name}\\(.*\\); /\\* TBG-PATCHED \\*/$`);

    assertHook(
      body(s, "void *stratifier(void *arg)"),
      "sdata->ckp = ckp;",
      hook("tbg_hook_init"),
      "after",
    );
    assertHook(
      body(
        s,
        "static void check_best_diff(sdata_t *sdata, user_instance_t *user,worker_instance_t *worker,",
      ),
      "user->best_diff = sdiff;",
      hook("tbg_hook_share_best_diff"),
      "before",
    );
    // share_submitted: once at out:, reached by every verdict, and at the one early return
    const submit = body(
      s,
      "static json_t *parse_submit(stratum_instance_t *client, json_t *json_msg,",
    );
    assertHook(submit, "out:", hook("tbg_hook_share_submitted"), "after");
    assert.deepEqual(submit.filter((l) => /^return /.test(l)), [
      "return tbg_hook_share_no_workbase(client, diff); /* TBG-PATCHED */",
      "return json_boolean(result);",
    ]);
    const outAt = submit.indexOf("out:");
    const verdicts = submit.map((l, i) =>
      /SE_(DUPE|HIGH_DIFF|STALE|NTIME_INVALID)|result = true/.test(l) ? i : -1
    ).filter((i) => i >= 0);
    assert.ok(verdicts.length >= 5 && verdicts.every((i) => i < outAt), "a verdict after the hook");
    const solve = body(s, "static void block_solve(ckpool_t *ckp, json_t *val)");
    const found = hook("tbg_hook_block_found");
    assert.match(solve[solve.indexOf('LOGWARNING("Solved and confirmed block!");') + 1], found);
    assert.match(
      solve[
        solve.indexOf('LOGWARNING("Solved and confirmed block %d by %s", height, workername);') + 1
      ],
      found,
    );
    assert.equal(solve.filter((l) => found.test(l)).length, 2);
    for (
      const fn of [
        "static void block_update(ckpool_t *ckp, int *prio)",
        "static void add_node_base(ckpool_t *ckp, json_t *val, bool trusted, int64_t client_id)",
      ]
    ) {
      const lines = body(s, fn);
      const at = lines.indexOf('LOGNOTICE("Block hash changed to %s", sdata->lastswaphash);');
      assert.deepEqual(lines.slice(at - 1, at + 3), [
        "if (new_block)",
        'LOGNOTICE("Block hash changed to %s", sdata->lastswaphash);',
        "if (new_block) /* TBG-PATCHED */",
        "tbg_hook_new_block_network(sdata, wb);",
      ]);
    }
    for (
      const fn of [
        "static void __drop_client(sdata_t *sdata, stratum_instance_t *client, bool lazily, char **msg)",
        "static void drop_allclients(ckpool_t *ckp)",
      ]
    ) {
      assertHook(
        body(s, fn),
        "__del_client(sdata, client);",
        hook("tbg_hook_miner_disconnected"),
        "before",
      );
    }
    const auth = body(
      s,
      "static void client_auth(ckpool_t *ckp, stratum_instance_t *client, user_instance_t *user,",
    );
    assertHook(auth, "client->authorised = ret;", hook("tbg_hook_miner_connected"), "after");
    assert.equal(auth[auth.indexOf("client->authorised = ret;") - 1], "if (ret) {"); // success only
    const sendDiff = body(
      s,
      "static void stratum_send_diff(sdata_t *sdata, const stratum_instance_t *client)",
    );
    assertHook(
      sendDiff,
      "stratum_add_send(sdata, json_msg, client->id, SM_DIFF);",
      hook("tbg_hook_diff_sent"),
      "before",
    );
    const stats = body(s, "static void *statsupdate(void *arg)");
    assertHook(
      stats,
      "ts_to_tv(&now, &stats->last_update);",
      hook("tbg_hook_stats_tick"),
      "after",
    );
    // The tick is in the loop of 32 ticks a minute, right after its sleep
    const tick = stats.findIndex((l) => hook("tbg_hook_stats_tick").test(l));
    assert.ok(stats.slice(tick - 4, tick).includes("cksleep_ms_r(&stats->last_update, 1875);"));
    // 11 hook calls and the 2 "if (new_block)" guards, nothing else, nothing twice
    assert.equal(s.match(/TBG-PATCHED \*\//g)?.length, 13);
    assert.match(s, /^#include "tbg_events\.c"$/m);

    const field = body(await Deno.readTextFile(`${src}/ckpool.h`), "struct ckpool_instance {");
    assert.ok(field.includes("char *event_socket_path;"));
    assert.ok(field.includes("int event_hashrate_interval;"));
    const config = body(
      await Deno.readTextFile(`${src}/ckpool.c`),
      "static void parse_config(ckpool_t *ckp)",
    );
    assert.ok(
      config.includes('json_get_string(&ckp->event_socket_path, json_conf, "event_socket_path");'),
    );
    assert.ok(
      config.includes(
        'json_get_int(&ckp->event_hashrate_interval, json_conf, "event_hashrate_interval");',
      ),
    );
    const bitcoin = await Deno.readTextFile(`${src}/bitcoin.c`);
    assert.match(bitcoin, /^static char\* understood_rules\[\] = \{"segwit", "signet"\};$/m);
    assert.match(bitcoin, /\\"rules\\" : \[\\"segwit\\", \\"signet\\"\]/);
  },
});

/**
 * Starts the built ckpool with the shipped config, pointed at a temp dir and at a bitcoind that
 * is not there (the emitter opens before ckpool waits for bitcoind), with `event_socket_path`
 * set to `socketPath` (left out when undefined), and returns its log once `pattern` shows up.
 */
async function startupLog(
  b: CkpoolBuild,
  socketPath: string | undefined,
  pattern: RegExp,
  /** Config keys to set (a value of undefined removes the key). */
  config: Record<string, unknown> = {},
): Promise<{ match: RegExpExecArray; dir: string }> {
  const dir = await Deno.makeTempDir({ prefix: "tbg-ckpool-run-" });
  const conf = JSON.parse(
    await Deno.readTextFile(new URL("../../ckpool/config/ckpool-signet.conf", import.meta.url)),
  );
  Object.assign(conf, {
    btcd: [{ url: "127.0.0.1:1", auth: "x", pass: "y", notify: true }],
    serverurl: [`127.0.0.1:${freePort()}`],
    logdir: `${dir}/logs`,
  });
  if (socketPath === undefined) delete conf.event_socket_path;
  else conf.event_socket_path = socketPath.replace("$DIR", dir);
  for (const [key, value] of Object.entries(config)) {
    if (value === undefined) delete conf[key];
    else conf[key] = value;
  }
  await Deno.writeTextFile(`${dir}/ckpool.conf`, JSON.stringify(conf));
  const child = new Deno.Command(b.ckpool, {
    args: ["-B", "-c", `${dir}/ckpool.conf`, "-s", `${dir}/sock`, "-n", "tbgtest"],
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    const match = await waitFor(async () => {
      const log = await Deno.readTextFile(`${dir}/logs/tbgtest.log`).catch(() => "");
      return pattern.exec(log);
    }, { timeoutMs: 20_000, what: `ckpool to log ${pattern}` });
    return { match, dir };
  } finally {
    child.kill("SIGKILL");
    await child.status;
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test({
  name: "the built ckpool reads event_socket_path from its config and opens the emitter",
  ignore,
  async fn() {
    const b = await build();
    const sending = /TBG events: emitter ([0-9a-f]{16}) sending to (\S+),/;
    const given = await startupLog(b, "$DIR/events.sock", sending);
    assert.equal(given.match[2], `${given.dir}/events.sock`);
    const absent = await startupLog(b, undefined, sending);
    assert.equal(absent.match[2], "/tmp/ckpool/events.sock");
    await startupLog(b, "", /TBG events disabled: event_socket_path is empty/);
  },
});

Deno.test({
  name: "the built ckpool reads event_hashrate_interval: 60 s when absent, 0 for none",
  ignore,
  async fn() {
    const b = await build();
    const every = /TBG events: emitter [0-9a-f]{16} sending to \S+, .*, hashrates every (\d+) s/;
    for (const [value, expected] of [[undefined, "60"], [5, "5"], [0, "0"]] as const) {
      const run = await startupLog(b, "$DIR/events.sock", every, {
        event_hashrate_interval: value,
      });
      assert.equal(run.match[1], expected, `event_hashrate_interval ${value}`);
    }
  },
});

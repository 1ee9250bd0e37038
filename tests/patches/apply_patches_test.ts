/**
 * apply-patches.sh and update-lock.sh on synthetic ckpool trees: small files that hold every
 * anchor of the kit (and decoys outside the anchors' scopes), in a git repository. Each test
 * works on a copy of the kit, so the real UPSTREAM.lock is never rewritten.
 */
import assert from "node:assert/strict";

const REAL_KIT = new URL("../../patches/", import.meta.url).pathname;
const FILES = ["src/stratifier.c", "src/ckpool.h", "src/ckpool.c", "src/bitcoin.c"];

const FAKE_STRATIFIER = `/* synthetic stratifier.c for the kit's tests */
#define GEN_PRIORITY 2

struct stratum_instance {
	int64_t id;
	bool remote; /* Is this a remote client on a trusted remote server */
};

static void decoys(void)
{
	sdata->ckp = ckp;
	return json_boolean(false);
out:
	user->best_diff = sdiff;
	client->authorised = ret;
}

static void block_update(ckpool_t *ckp, int *prio)
{
	if (new_block)
		LOGNOTICE("Block hash changed to %s", sdata->lastswaphash);
}

static void add_node_base(ckpool_t *ckp, json_t *val, bool trusted, int64_t client_id)
{
	if (new_block)
		LOGNOTICE("Block hash changed to %s", sdata->lastswaphash);
}

static void drop_allclients(ckpool_t *ckp)
{
		if (!client->ref) {
			__del_client(sdata, client);
		}
}

static void __drop_client(sdata_t *sdata, stratum_instance_t *client, bool lazily, char **msg)
{
	__del_client(sdata, client);
}

static void block_solve(ckpool_t *ckp, json_t *val)
{
	if (!workername) {
		LOGWARNING("Solved and confirmed block!");
	} else {
		LOGWARNING("Solved and confirmed block %d by %s", height, workername);
	}
}

static void client_auth(ckpool_t *ckp, stratum_instance_t *client, user_instance_t *user,
			const bool ret)
{
	if (ret) {
		client->authorised = ret;
	}
}

static void check_best_diff(sdata_t *sdata, user_instance_t *user,worker_instance_t *worker,
			    const double sdiff, stratum_instance_t *client)
{
	if (sdiff > user->best_diff) {
		user->best_diff = sdiff;
	}
}

static json_t *parse_submit(stratum_instance_t *client, json_t *json_msg,
			    const json_t *params_val, json_t **err_val)
{
	if (unlikely(!sdata->current_workbase))
		return json_boolean(false);
out:
	return json_boolean(result);
}

static void stratum_send_diff(sdata_t *sdata, const stratum_instance_t *client)
{
	stratum_add_send(sdata, json_msg, client->id, SM_DIFF);
}

static void *statsupdate(void *arg)
{
	while (42) {
		for (i = 0; i < 32; i++) {
			ts_to_tv(&now, &stats->last_update);
		}
	}
}

void *stratifier(void *arg)
{
	sdata->ckp = ckp;
}
`;

const FAKE_FILES: Record<string, string> = {
  "configure.ac": "AC_INIT([ckpool],[0.9.9],[kernel@kolivas.org])\n",
  "src/stratifier.c": FAKE_STRATIFIER,
  "src/ckpool.h": "struct ckpool_instance {\n\tchar *zmqblock;\n};\n",
  "src/ckpool.c": `static void parse_config(ckpool_t *ckp)
{
	json_get_string(&ckp->zmqblock, json_conf, "zmqblock");
}
`,
  "src/bitcoin.c": `static char* understood_rules[] = {"segwit"};

static const char *gbt_req = "{\\"method\\": \\"getblocktemplate\\", \\"params\\": [{\\"capabilities\\": [\\"coinbasetxn\\", \\"workid\\", \\"coinbase/append\\"], \\"rules\\" : [\\"segwit\\"]}]}\\n";
`,
};

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

async function run(
  cmd: string,
  args: string[],
  options: { cwd?: string; env?: Record<string, string> } = {},
): Promise<Result> {
  const out = await new Deno.Command(cmd, {
    args,
    cwd: options.cwd,
    env: options.env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

async function git(dir: string, ...args: string[]): Promise<string> {
  const r = await run("git", ["-c", "user.name=kit-test", "-c", "user.email=kit@test", ...args], {
    cwd: dir,
    env: { GIT_COMMITTER_DATE: "2025-07-08T12:00:00Z", GIT_AUTHOR_DATE: "2025-07-08T12:00:00Z" },
  });
  assert.equal(r.code, 0, `git ${args.join(" ")}: ${r.stderr}`);
  return r.stdout.trim();
}

interface Fixture {
  kit: string;
  tree: string;
  apply(args?: string[], env?: Record<string, string>): Promise<Result>;
  updateLock(): Promise<Result>;
  /** Every file of the tree's src/ with its content. */
  snapshot(): Promise<Record<string, string>>;
  read(path: string): Promise<string>;
  write(path: string, text: string): Promise<void>;
}

/**
 * A copy of the kit and a synthetic tree committed to git, with the kit's lock rewritten for
 * it by update-lock.sh (unless `lock` is false). `edit` changes the files before the commit.
 */
async function withFixture(
  fn: (f: Fixture) => Promise<void>,
  { edit = (files: Record<string, string>) => files, lock = true } = {},
): Promise<void> {
  const base = await Deno.makeTempDir({ prefix: "tbg-kit-test-" });
  try {
    // Spaces in both paths: the scripts must quote everything
    const kit = `${base}/the kit`;
    const tree = `${base}/ck pool`;
    assert.equal((await run("cp", ["-a", REAL_KIT, kit])).code, 0);
    await Deno.mkdir(`${tree}/src`, { recursive: true });
    for (const [path, text] of Object.entries(edit({ ...FAKE_FILES }))) {
      await Deno.writeTextFile(`${tree}/${path}`, text);
    }
    await git(tree, "init", "-q");
    await git(tree, "add", "-A");
    await git(tree, "commit", "-q", "-m", "synthetic ckpool");
    const f: Fixture = {
      kit,
      tree,
      apply: (args = [], env = {}) => run(`${kit}/apply-patches.sh`, [...args, tree], { env }),
      updateLock: () => run(`${kit}/update-lock.sh`, [tree]),
      snapshot: async () => {
        const files: Record<string, string> = {};
        for await (const entry of Deno.readDir(`${tree}/src`)) {
          files[entry.name] = await Deno.readTextFile(`${tree}/src/${entry.name}`);
        }
        return files;
      },
      read: (path) => Deno.readTextFile(`${tree}/${path}`),
      write: (path, text) => Deno.writeTextFile(`${tree}/${path}`, text),
    };
    if (lock) {
      const r = await f.updateLock();
      assert.equal(r.code, 0, `update-lock: ${r.stdout}${r.stderr}`);
    }
    await fn(f);
  } finally {
    await Deno.remove(base, { recursive: true });
  }
}

/** The line after the first line equal to `anchor` (trimmed) inside `fn`'s body. */
function neighbours(text: string, fnStart: string, anchor: string): [string, string] {
  const lines = text.split("\n");
  const start = lines.findIndex((l) => l.trim() === fnStart);
  assert.ok(start >= 0, `no ${fnStart}`);
  const end = lines.findIndex((l, i) => i > start && l === "}");
  const at = lines.findIndex((l, i) => i > start && i < end && l.trim() === anchor);
  assert.ok(at >= 0, `no ${anchor} in ${fnStart}`);
  return [lines[at - 1].trim(), lines[at + 1].trim()];
}

async function sha256(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

Deno.test("update-lock pins a clean tree; apply-patches puts every hook at its anchor", async () => {
  await withFixture(async (f) => {
    const lock = await Deno.readTextFile(`${f.kit}/UPSTREAM.lock`);
    assert.match(lock, new RegExp(`^commit=${await git(f.tree, "rev-parse", "HEAD")}$`, "m"));
    assert.match(lock, /^version=0\.9\.9$/m);
    assert.match(lock, /^date=2025-07-08$/m);
    assert.match(lock, /^repository=https:\/\/bitbucket\.org\/ckolivas\/ckpool\.git$/m);
    for (const file of FILES) {
      assert.ok(lock.includes(`sha256:${file}=${await sha256(FAKE_FILES[file])}\n`), file);
    }

    const r = await f.apply();
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /patched/);
    assert.match(r.stdout, /autogen\.sh/); // tells the operator what to do next
    const s = await f.read("src/stratifier.c");
    const hook = (name: string) => new RegExp(`\\b${name}\\(.*\\); /\\* TBG-PATCHED \\*/$`);
    assert.match(
      neighbours(s, "void *stratifier(void *arg)", "sdata->ckp = ckp;")[1],
      hook("tbg_hook_init"),
    );
    assert.match(
      neighbours(
        s,
        "static void check_best_diff(sdata_t *sdata, user_instance_t *user,worker_instance_t *worker,",
        "user->best_diff = sdiff;",
      )[0],
      hook("tbg_hook_share_best_diff"),
    );
    const submit = "static json_t *parse_submit(stratum_instance_t *client, json_t *json_msg,";
    assert.match(neighbours(s, submit, "out:")[1], hook("tbg_hook_share_submitted"));
    assert.match(
      s,
      /\t\treturn tbg_hook_share_no_workbase\(client, diff\); \/\* TBG-PATCHED \*\/\n/,
    );
    assert.match(
      neighbours(
        s,
        "static void block_solve(ckpool_t *ckp, json_t *val)",
        'LOGWARNING("Solved and confirmed block!");',
      )[1],
      hook("tbg_hook_block_found"),
    );
    assert.match(
      neighbours(
        s,
        "static void block_solve(ckpool_t *ckp, json_t *val)",
        'LOGWARNING("Solved and confirmed block %d by %s", height, workername);',
      )[1],
      hook("tbg_hook_block_found"),
    );
    assert.match(
      neighbours(
        s,
        "static void __drop_client(sdata_t *sdata, stratum_instance_t *client, bool lazily, char **msg)",
        "__del_client(sdata, client);",
      )[0],
      hook("tbg_hook_miner_disconnected"),
    );
    assert.match(
      neighbours(
        s,
        "static void drop_allclients(ckpool_t *ckp)",
        "__del_client(sdata, client);",
      )[0],
      hook("tbg_hook_miner_disconnected"),
    );
    assert.match(
      neighbours(
        s,
        "static void client_auth(ckpool_t *ckp, stratum_instance_t *client, user_instance_t *user,",
        "client->authorised = ret;",
      )[1],
      hook("tbg_hook_miner_connected"),
    );
    for (
      const fn of [
        "static void block_update(ckpool_t *ckp, int *prio)",
        "static void add_node_base(ckpool_t *ckp, json_t *val, bool trusted, int64_t client_id)",
      ]
    ) {
      assert.equal(
        neighbours(s, fn, 'LOGNOTICE("Block hash changed to %s", sdata->lastswaphash);')[1],
        "if (new_block) /* TBG-PATCHED */",
      );
    }
    assert.match(
      s,
      /bool remote; .*\n\n\t\/\* TBG-PATCHED: .*\n\tint64_t tbg_shares;\n\tint64_t tbg_rejects;\n/,
    );
    assert.match(
      s,
      /#define GEN_PRIORITY 2\n\/\* TBG-PATCHED kit [0-9a-f]{16}: .*\n\n\/\* TBG-PATCHED: .*\n(.*\n)*#include "tbg_events.c"\n/,
    );
    // Decoys outside the anchors' scopes are untouched
    assert.ok(
      s.includes(
        "static void decoys(void)\n{\n\tsdata->ckp = ckp;\n\treturn json_boolean(false);\nout:\n\tuser->best_diff = sdiff;\n\tclient->authorised = ret;\n}\n",
      ),
    );
    assert.equal(
      neighbours(
        s,
        "static void stratum_send_diff(sdata_t *sdata, const stratum_instance_t *client)",
        "stratum_add_send(sdata, json_msg, client->id, SM_DIFF);",
      )[0],
      "tbg_hook_diff_sent(client); /* TBG-PATCHED */",
    );
    assert.equal(
      neighbours(
        s,
        "static void *statsupdate(void *arg)",
        "ts_to_tv(&now, &stats->last_update);",
      )[1],
      "tbg_hook_stats_tick(ckp, sdata); /* TBG-PATCHED */",
    );
    assert.match(s, /\n\tint64_t tbg_told_diff;\n};/);
    assert.match(
      s,
      /\n\/\* TBG-PATCHED: hashrate_update\.(.*\n)*static void tbg_hook_stats_tick\(.*\)\n\{\n(.*\n)*\}\n\nstatic void \*statsupdate\(void \*arg\)\n/,
    );
    // One call per hook site, nothing doubled
    assert.equal(s.match(/; \/\* TBG-PATCHED \*\//g)?.length, 11);

    assert.match(
      await f.read("src/ckpool.h"),
      /\tchar \*zmqblock;\n\n\t\/\* TBG-PATCHED.*\n\tchar \*event_socket_path;\n(\t.*\n)+\tint event_hashrate_interval;\n};/,
    );
    assert.match(
      await f.read("src/ckpool.c"),
      /"zmqblock"\);\n\t\/\* TBG-PATCHED.*\n\tjson_get_string\(&ckp->event_socket_path, json_conf, "event_socket_path"\);\n\tckp->event_hashrate_interval = -1;\n\tjson_get_int\(&ckp->event_hashrate_interval, json_conf, "event_hashrate_interval"\);\n}/,
    );
    const bitcoin = await f.read("src/bitcoin.c");
    assert.ok(bitcoin.includes('static char* understood_rules[] = {"segwit", "signet"};\n'));
    assert.ok(bitcoin.includes('\\"rules\\" : [\\"segwit\\", \\"signet\\"]}]}\\n";\n'));
    assert.ok(!bitcoin.includes('[\\"segwit\\"]}'));
    for (const name of ["tbg_events.c", "tbg_events.h"]) {
      assert.equal(await f.read(`src/${name}`), await Deno.readTextFile(`${REAL_KIT}/${name}`));
    }
  });
});

Deno.test("a checksum mismatch is refused with what changed and how to update", async () => {
  await withFixture(async (f) => {
    await f.write("src/ckpool.c", FAKE_FILES["src/ckpool.c"] + "/* a newer upstream */\n");
    const before = await f.snapshot();
    const r = await f.apply();
    assert.equal(r.code, 1);
    assert.match(r.stderr, /REFUSED/);
    assert.match(r.stderr, /src\/ckpool\.c/);
    assert.ok(r.stderr.includes(await sha256(FAKE_FILES["src/ckpool.c"])), "shows the locked hash");
    assert.doesNotMatch(r.stderr, /src\/stratifier\.c/); // only what changed
    assert.match(r.stderr, /update-lock\.sh/);
    assert.match(r.stderr, /TBG_SKIP_VERIFY=1/);
    assert.deepEqual(await f.snapshot(), before);
  });
});

Deno.test("TBG_SKIP_VERIFY=1 patches a mismatching tree with a loud warning", async () => {
  await withFixture(async (f) => {
    await f.write("src/ckpool.c", FAKE_FILES["src/ckpool.c"] + "/* a newer upstream */\n");
    const r = await f.apply([], { TBG_SKIP_VERIFY: "1" });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /WARNING: TBG_SKIP_VERIFY=1/);
    assert.match(r.stderr, /src\/ckpool\.c/);
    assert.match(await f.read("src/ckpool.c"), /event_socket_path/);
  });
});

Deno.test("a missing anchor aborts with its name and leaves the tree untouched", async () => {
  await withFixture(async (f) => {
    // update-lock writes the lock but reports that the kit no longer fits
    const r = await f.updateLock();
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /init: "sdata->ckp = ckp;" found 0 times in "void \*stratifier\(void \*arg\)", expected 1/,
    );
    const before = await f.snapshot();
    const applied = await f.apply();
    assert.equal(applied.code, 1);
    assert.match(applied.stderr, /ABORTED, nothing was changed/);
    assert.match(applied.stderr, /src\/stratifier\.c: anchor init: /);
    assert.deepEqual(await f.snapshot(), before);
    assert.deepEqual(Object.keys(before).sort(), [
      "bitcoin.c",
      "ckpool.c",
      "ckpool.h",
      "stratifier.c",
    ]);
  }, {
    lock: false,
    edit: (files) => ({
      ...files,
      "src/stratifier.c": files["src/stratifier.c"].replace(
        "void *stratifier(void *arg)\n{\n\tsdata->ckp = ckp;\n",
        "void *stratifier(void *arg)\n{\n\tsdata->ckp = other;\n",
      ),
    }),
  });
});

Deno.test("an ambiguous anchor, or one missing in another file, changes no file", async () => {
  await withFixture(async (f) => {
    assert.equal((await f.updateLock()).code, 1); // the lock is written, the kit does not fit
    const before = await f.snapshot();
    const r = await f.apply();
    assert.equal(r.code, 1);
    assert.match(r.stderr, /anchor block-found-unnamed: .* found 2 times .*expected 1/);
    assert.match(r.stderr, /src\/ckpool\.h: anchor event-socket-path-field: .* found 0 times/);
    assert.deepEqual(await f.snapshot(), before);
  }, {
    lock: false,
    edit: (files) => ({
      ...files,
      "src/stratifier.c": files["src/stratifier.c"].replace(
        '\t\tLOGWARNING("Solved and confirmed block!");\n',
        '\t\tLOGWARNING("Solved and confirmed block!");\n\t\tLOGWARNING("Solved and confirmed block!");\n',
      ),
      "src/ckpool.h": "struct ckpool_instance {\n\tchar *zmq_block;\n};\n",
    }),
  });
});

Deno.test("--check finds every anchor and writes nothing", async () => {
  await withFixture(async (f) => {
    const before = await f.snapshot();
    const r = await f.apply(["--check"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /all anchors found/);
    assert.equal(r.stdout.match(/^ {2}src\//gm)?.length, 21);
    assert.deepEqual(await f.snapshot(), before);
  });
});

Deno.test("a second run is a no-op; a tree patched by another kit version is refused", async () => {
  await withFixture(async (f) => {
    assert.equal((await f.apply()).code, 0);
    const patched = await f.snapshot();
    const again = await f.apply();
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /already patched by this kit .*nothing to do/);
    assert.deepEqual(await f.snapshot(), patched);

    // The kit changed since: the tree holds hooks of another version
    await Deno.writeTextFile(
      `${f.kit}/hooks/stratifier-init.inc`,
      "\ttbg_hook_init(ckp); /* TBG-PATCHED v2 */\n",
    );
    const other = await f.apply();
    assert.equal(other.code, 1);
    assert.match(other.stderr, /REFUSED: .* already holds changes/);
    assert.match(other.stderr, /not exactly this one/);
    assert.match(other.stderr, /git -C .* checkout -- src/);
    assert.deepEqual(await f.snapshot(), patched);
  });
});

Deno.test("a tree holding only part of the kit is refused", async () => {
  await withFixture(async (f) => {
    await f.write("src/tbg_events.c", "/* left over */\n");
    const r = await f.apply([], { TBG_SKIP_VERIFY: "1" });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /src\/tbg_events\.c/);
    assert.doesNotMatch(await f.read("src/stratifier.c"), /TBG-PATCHED/);
  });
});

Deno.test("update-lock refuses a patched tree and a dirty one", async () => {
  await withFixture(async (f) => {
    const lockBefore = await Deno.readTextFile(`${f.kit}/UPSTREAM.lock`);
    await f.write("src/bitcoin.c", FAKE_FILES["src/bitcoin.c"] + "/* local change */\n");
    const dirty = await f.updateLock();
    assert.equal(dirty.code, 1);
    assert.match(dirty.stderr, /REFUSED: files the kit patches differ from commit/);
    await git(f.tree, "checkout", "--", "src");

    assert.equal((await f.apply()).code, 0);
    const patched = await f.updateLock();
    assert.equal(patched.code, 1);
    assert.match(patched.stderr, /REFUSED: .* already patched/);
    assert.equal(await Deno.readTextFile(`${f.kit}/UPSTREAM.lock`), lockBefore);
  });
});

Deno.test("missing files and bad arguments are refused", async () => {
  await withFixture(async (f) => {
    await Deno.remove(`${f.tree}/src/bitcoin.c`);
    const r = await f.apply();
    assert.equal(r.code, 1);
    assert.match(r.stderr, /missing src\/bitcoin\.c/);
    const usage = await run(`${f.kit}/apply-patches.sh`, []);
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /Usage:/);
    const notDir = await run(`${f.kit}/apply-patches.sh`, [`${f.tree}/nope`]);
    assert.equal(notDir.code, 1);
    assert.match(notDir.stderr, /is not a directory/);
  });
});

Deno.test("the edit engine runs under every awk on this machine, and no script uses sed", async () => {
  const awks: string[] = [];
  for (const name of ["awk", "mawk", "gawk", "original-awk", "nawk", "busybox"]) {
    const r = await run("sh", ["-c", `command -v ${name}`]);
    if (r.code === 0) awks.push(r.stdout.trim());
  }
  assert.ok(awks.length > 0, "no awk found");
  for (const awk of awks) {
    await withFixture(async (f) => {
      const bin = `${f.kit}/../bin`;
      await Deno.mkdir(bin);
      const script = awk.endsWith("busybox")
        ? `#!/bin/sh\nexec ${awk} awk "$@"\n`
        : `#!/bin/sh\nexec ${awk} "$@"\n`;
      await Deno.writeTextFile(`${bin}/awk`, script, { mode: 0o755 });
      const r = await f.apply([], { PATH: `${bin}:${Deno.env.get("PATH")}` });
      assert.equal(r.code, 0, `${awk}: ${r.stderr}`);
      assert.equal(
        (await f.read("src/stratifier.c")).match(/; \/\* TBG-PATCHED \*\//g)?.length,
        11,
        awk,
      );
    });
  }
  for (const name of ["apply-patches.sh", "update-lock.sh", "kit-lib.sh"]) {
    const text = await Deno.readTextFile(`${REAL_KIT}/${name}`);
    assert.doesNotMatch(text, /(^|[|;&(`]|\$\()\s*sed\s/m, `${name} calls sed`);
  }
});

/**
 * Builds upstream ckpool patched by `patches/`, once per pinned commit and kit version.
 *
 * The checkout given (a clean clone at the commit in `patches/UPSTREAM.lock`) is copied, the
 * kit is applied to the copy and the copy is built with autotools. The result is cached under
 * `$TBG_CKPOOL_CACHE` (default `${XDG_CACHE_HOME:-$HOME/.cache}/tbg-ckpool`) in a folder named
 * after the pinned commit and a hash of every file of the kit, so a later run, or another test,
 * reuses it until the kit changes.
 *
 * @module
 */

/** Where the repository's patch kit lives. */
export const KIT_DIR = new URL("../../patches/", import.meta.url).pathname;

/** A patched ckpool build. */
export interface CkpoolBuild {
  /** Folder holding `ckpool`, `ckpmsg` and `notifier`. */
  readonly binDir: string;
  /** Path of the `ckpool` executable. */
  readonly ckpool: string;
  /** The patched, built source tree (its `src/` is `binDir`). */
  readonly treeDir: string;
  /** Seconds the copy, patch and build took (when cached: the original build's). */
  readonly seconds: number;
  /** Whether this call reused an earlier build. */
  readonly cached: boolean;
  /** The cache key: pinned commit and kit hash. */
  readonly key: string;
}

/** Options for {@link buildPatchedCkpool}. */
export interface BuildOptions {
  /** Cache folder; default from `TBG_CKPOOL_CACHE` or the XDG cache dir. */
  readonly cacheRoot?: string;
  /** Parallel make jobs (default 2). */
  readonly jobs?: number;
}

interface Stamp {
  seconds: number;
  key: string;
  builtAt: string;
}

/** Reads one `key=value` line of `patches/UPSTREAM.lock`. */
export async function lockValue(key: string, kitDir = KIT_DIR): Promise<string> {
  const text = await Deno.readTextFile(`${kitDir}/UPSTREAM.lock`);
  for (const line of text.split("\n")) {
    if (line.startsWith(`${key}=`)) return line.slice(key.length + 1).trim();
  }
  throw new Error(`patches/UPSTREAM.lock has no ${key}= line`);
}

async function sha256Hex(data: Uint8Array | string): Promise<string> {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  const digest = await crypto.subtle.digest("SHA-256", bytes as BufferSource);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function listFiles(dir: string, prefix = ""): Promise<string[]> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(`${dir}/${prefix}`)) {
    const rel = prefix ? `${prefix}/${entry.name}` : entry.name;
    if (entry.isDirectory) names.push(...await listFiles(dir, rel));
    else if (entry.isFile) names.push(rel);
  }
  return names.sort();
}

/** Hash of every file of the kit, by path and content. */
export async function kitHash(kitDir = KIT_DIR): Promise<string> {
  let manifest = "";
  for (const name of await listFiles(kitDir)) {
    manifest += `${await sha256Hex(await Deno.readFile(`${kitDir}/${name}`))} ${name}\n`;
  }
  return await sha256Hex(manifest);
}

/** The default cache folder. */
export function defaultCacheRoot(): string {
  const explicit = Deno.env.get("TBG_CKPOOL_CACHE");
  if (explicit) return explicit;
  const xdg = Deno.env.get("XDG_CACHE_HOME");
  const home = Deno.env.get("HOME") ?? "/tmp";
  return `${xdg || `${home}/.cache`}/tbg-ckpool`;
}

async function readStamp(dir: string): Promise<Stamp | undefined> {
  try {
    return JSON.parse(await Deno.readTextFile(`${dir}/.tbg-build.json`)) as Stamp;
  } catch {
    return undefined;
  }
}

async function run(cmd: string[], cwd: string, log: string): Promise<void> {
  const output = await new Deno.Command(cmd[0], {
    args: cmd.slice(1),
    cwd,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(output.stdout) + new TextDecoder().decode(output.stderr);
  await Deno.writeTextFile(log, `$ ${cmd.join(" ")}\n${text}\n`, { append: true });
  if (!output.success) {
    const tail = text.split("\n").slice(-40).join("\n");
    throw new Error(`${cmd.join(" ")} failed in ${cwd} (exit ${output.code}):\n${tail}`);
  }
}

/**
 * Returns a patched ckpool built from the clean checkout `srcDir`, building it when the cache
 * has no build for this pinned commit and kit.
 */
export async function buildPatchedCkpool(
  srcDir: string,
  options: BuildOptions = {},
): Promise<CkpoolBuild> {
  const commit = await lockValue("commit");
  const key = `${commit.slice(0, 12)}-${(await kitHash()).slice(0, 16)}`;
  const root = options.cacheRoot ?? defaultCacheRoot();
  const treeDir = `${root}/${key}`;
  const result = (seconds: number, cached: boolean): CkpoolBuild => ({
    binDir: `${treeDir}/src`,
    ckpool: `${treeDir}/src/ckpool`,
    treeDir,
    seconds,
    cached,
    key,
  });

  const stamp = await readStamp(treeDir);
  if (stamp?.key === key) return result(stamp.seconds, true);

  await Deno.mkdir(root, { recursive: true });
  // Built beside the final folder and renamed into place, so a half build is never reused.
  const work = await Deno.makeTempDir({ dir: root, prefix: `.${key}.` });
  const log = `${work}.log`;
  const started = performance.now();
  try {
    await run(["cp", "-a", `${srcDir}/.`, work], root, log);
    await run(["bash", `${KIT_DIR}/apply-patches.sh`, work], root, log);
    await run(["./autogen.sh"], work, log);
    await run(["./configure", "--without-ckdb"], work, log);
    await run(["make", `-j${options.jobs ?? 2}`], work, log);
    const seconds = Math.round((performance.now() - started) / 100) / 10;
    const built: Stamp = { seconds, key, builtAt: new Date().toISOString() };
    await Deno.writeTextFile(`${work}/.tbg-build.json`, JSON.stringify(built));
    await Deno.remove(treeDir, { recursive: true }).catch(() => {});
    try {
      await Deno.rename(work, treeDir);
    } catch (error) {
      // Another process finished the same build first: use theirs.
      const theirs = await readStamp(treeDir);
      if (theirs?.key !== key) throw error;
      await Deno.remove(work, { recursive: true });
      return result(theirs.seconds, true);
    }
    await Deno.remove(log).catch(() => {});
    return result(seconds, false);
  } catch (error) {
    await Deno.remove(work, { recursive: true }).catch(() => {});
    throw new Error(`building patched ckpool failed (log: ${log})`, { cause: error });
  }
}

/**
 * Finds whether TimescaleDB is installed for a PostgreSQL server, so that every server the
 * project starts (tests, `deno task dev`, the bench) preloads it there: installed but not
 * preloaded, `CREATE EXTENSION timescaledb` fails and so would `sql/init.sql`.
 *
 * @module
 */

/** How to get TimescaleDB where it is missing, for skip messages. */
export const TIMESCALEDB_HOWTO =
  "build TimescaleDB 2.17.2 for PostgreSQL 15 (README, 'TimescaleDB on this machine')";

function isFile(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

/**
 * The directories of a server's loadable modules and of its extension files, for a server
 * binary in `binDir`: asks `pg_config` next to it, or falls back to Debian's layout
 * (`/usr/lib/postgresql/N/{bin,lib}`, `/usr/share/postgresql/N`).
 */
function serverDirs(binDir: string): { lib: string; share: string } {
  const pgConfig = `${binDir}/pg_config`;
  if (isFile(pgConfig)) {
    try {
      const out = new Deno.Command(pgConfig, { args: ["--pkglibdir", "--sharedir"] }).outputSync();
      const [lib, share] = new TextDecoder().decode(out.stdout).trim().split("\n");
      if (out.success && lib && share) return { lib, share };
    } catch {
      // fall back to the layout below
    }
  }
  const version = binDir.match(/\/postgresql\/([0-9]+)\/bin\/?$/)?.[1] ?? "";
  return { lib: binDir.replace(/\/bin\/?$/, "/lib"), share: `/usr/share/postgresql/${version}` };
}

const installed = new Map<string, boolean>();

/** Whether TimescaleDB's library and extension files are installed for the server in `binDir`. */
export function timescaledbInstalled(binDir: string): boolean {
  let answer = installed.get(binDir);
  if (answer === undefined) {
    const { lib, share } = serverDirs(binDir);
    answer = isFile(`${lib}/timescaledb.so`) && isFile(`${share}/extension/timescaledb.control`);
    installed.set(binDir, answer);
  }
  return answer;
}

/**
 * `postgres` arguments that preload TimescaleDB where it is installed (with its telemetry
 * off: these machines reach no outside host), and none where it is not.
 */
export function timescaledbServerArgs(binDir: string): string[] {
  if (!timescaledbInstalled(binDir)) return [];
  return [
    "-c",
    "shared_preload_libraries=timescaledb",
    "-c",
    "timescaledb.telemetry_level=off",
  ];
}

/**
 * Builds a test's small C helper with gcc, once per process, into a temp dir removed at exit.
 *
 * @module
 */

const builds = new Map<string, Promise<string>>();

/**
 * Compiles `source` with `gcc -O2 -Wall` and the extra `args` (libraries, say) and returns
 * the binary's path; later calls with the same source share the build. The directory and
 * binary are world-readable, so a helper run under another uid can use them.
 *
 * @param needs what to install when the build fails, for the error message
 */
export function compileC(source: URL, args: readonly string[], needs: string): Promise<string> {
  const key = source.href;
  let build = builds.get(key);
  if (!build) {
    build = (async () => {
      const dir = await Deno.makeTempDir({ prefix: "tbg-c-" });
      globalThis.addEventListener("unload", () => {
        try {
          Deno.removeSync(dir, { recursive: true });
        } catch {
          // already gone
        }
      });
      await Deno.chmod(dir, 0o755);
      const name = source.pathname.split("/").pop()!.replace(/\.c$/, "");
      const binary = `${dir}/${name}`;
      let output: Deno.CommandOutput;
      try {
        output = await new Deno.Command("gcc", {
          args: ["-O2", "-Wall", "-o", binary, source.pathname, ...args],
          stdout: "piped",
          stderr: "piped",
        }).output();
      } catch (error) {
        throw new Error(`cannot run gcc to build ${name}: ${(error as Error).message}`);
      }
      if (!output.success) {
        throw new Error(
          `building ${name} failed (needs ${needs}):\n${new TextDecoder().decode(output.stderr)}`,
        );
      }
      await Deno.chmod(binary, 0o755);
      return binary;
    })();
    builds.set(key, build);
  }
  return build;
}

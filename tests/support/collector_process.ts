/**
 * Runs the collector as an operator does (`deno task start`'s command, configured only by
 * environment variables) in a child process, with its output captured.
 *
 * @module
 */
import { waitFor } from "./wait.ts";

const root = new URL("../../", import.meta.url).pathname;

/** The `deno run ...` arguments of the `start` task in deno.json. */
export function startTaskArgs(): string[] {
  const config = JSON.parse(Deno.readTextFileSync(`${root}deno.json`));
  const [program, ...args] = (config.tasks.start as string).split(/\s+/);
  if (program !== "deno") throw new Error(`unexpected start task: ${config.tasks.start}`);
  return args;
}

/** A collector running in a child process. */
export interface CollectorProcess {
  readonly child: Deno.ChildProcess;
  /** Everything it printed so far, stdout and stderr together. */
  output(): string;
  /** Waits until the output matches `pattern`. */
  waitForOutput(pattern: RegExp, timeoutMs?: number): Promise<void>;
  /** Sends `signal` and waits for the exit code. */
  stop(signal?: Deno.Signal): Promise<number>;
  /** Waits for the process to exit by itself and returns its code. */
  exitCode(timeoutMs?: number): Promise<number>;
}

/**
 * Starts the collector with `env` (added to a minimal environment). Unless `env` says
 * otherwise, the spool goes to a new temp dir and the metrics server is off, so collectors
 * of parallel tests never share either.
 */
export function spawnCollector(env: Record<string, string>): CollectorProcess {
  const ownSpool = env.SPOOL_DIR ? undefined : Deno.makeTempDirSync({ prefix: "tbg-spool-" });
  const child = new Deno.Command(Deno.execPath(), {
    args: startTaskArgs(),
    cwd: root,
    env: {
      STATS_INTERVAL: "0",
      METRICS_PORT: "0",
      ...(ownSpool ? { SPOOL_DIR: ownSpool } : {}),
      ...env,
    },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let text = "";
  const drain = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) text += chunk;
  };
  const drained = Promise.all([drain(child.stdout), drain(child.stderr)]);
  if (ownSpool) {
    child.status.then(() => Deno.remove(ownSpool, { recursive: true }).catch(() => {}));
  }
  return {
    child,
    output: () => text,
    waitForOutput: async (pattern, timeoutMs = 30_000) => {
      await waitFor(() => pattern.test(text), {
        timeoutMs,
        what: `collector output ${pattern}; output so far:\n${text}`,
      });
    },
    exitCode: async (timeoutMs = 30_000) => {
      let code: number | undefined;
      child.status.then((status) => code = status.code);
      await waitFor(() => code !== undefined, { timeoutMs, what: "the collector to exit" });
      await drained;
      return code!;
    },
    stop: async (signal = "SIGTERM") => {
      try {
        child.kill(signal);
      } catch {
        // already exited
      }
      const status = await child.status;
      await drained;
      return status.code;
    },
  };
}

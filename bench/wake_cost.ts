/**
 * What one wake-up of a sleeping thread costs in CPU on this machine (`deno task bench:wake`):
 * the floor under every wake-up of the collector's threads, for a plain C thread
 * (`bench/wake_cost.c`, compiled here with gcc) and for a Deno worker doing the same with
 * `Atomics.wait`. Two kinds, microseconds of the sleeping thread's own CPU per wake-up:
 * - timed: a wait that times out after 2 ms (the receive thread's gathering);
 * - notified: a wait another thread ends every 2 ms (a reader woken by the spool's head).
 *
 *   deno run --allow-all bench/wake_cost.ts [--iterations 2000] [--rounds 3]
 *
 * @module
 */
import { parseArgs } from "node:util";

const { values } = parseArgs({
  options: {
    iterations: { type: "string", default: "2000" },
    rounds: { type: "string", default: "3" },
  },
});
const iterations = Number(values.iterations);

/** CPU this thread has run, in microseconds (`/proc/thread-self/schedstat`, nanoseconds). */
function threadCpuUs(): number {
  return Number(Deno.readTextFileSync("/proc/thread-self/schedstat").split(" ")[0]) / 1000;
}

interface WakeCost {
  readonly timed: number;
  readonly notified: number;
}

/** Worker side: `sleeper` sleeps on slot 0, `notifier` moves it every 2 ms. */
function serveWorker(): void {
  self.onmessage = (event: MessageEvent<{ role: string; buffer: SharedArrayBuffer }>) => {
    const slots = new Int32Array(event.data.buffer);
    const start = threadCpuUs();
    if (event.data.role === "timed") {
      for (let i = 0; i < iterations; i++) Atomics.wait(slots, 1, 0, 2);
    } else if (event.data.role === "sleeper") {
      for (let seen = 0; seen < iterations;) {
        Atomics.wait(slots, 0, seen);
        seen = Atomics.load(slots, 0);
      }
    } else {
      for (let i = 0; i < iterations; i++) {
        Atomics.wait(slots, 1, 0, 2);
        Atomics.add(slots, 0, 1);
        Atomics.notify(slots, 0);
      }
    }
    self.postMessage((threadCpuUs() - start) / iterations);
  };
}

function inWorker(role: string, buffer: SharedArrayBuffer): Promise<number> {
  const url = new URL(import.meta.url);
  // The same module: a worker sees the same arguments, and this mark.
  url.search = "?worker";
  const worker = new Worker(url.href, { type: "module" });
  return new Promise((resolve) => {
    worker.onmessage = (event: MessageEvent<number>) => {
      worker.terminate();
      resolve(event.data);
    };
    worker.postMessage({ role, buffer });
  });
}

async function denoCost(): Promise<WakeCost> {
  const timed = await inWorker("timed", new SharedArrayBuffer(8));
  const buffer = new SharedArrayBuffer(8);
  const [notified] = await Promise.all([inWorker("sleeper", buffer), inWorker("notifier", buffer)]);
  return { timed, notified };
}

async function cCost(): Promise<WakeCost> {
  const dir = await Deno.makeTempDir({ prefix: "tbg-wake-" });
  try {
    const binary = `${dir}/wake_cost`;
    const source = new URL("./wake_cost.c", import.meta.url).pathname;
    const build = await new Deno.Command("gcc", {
      args: ["-O2", "-Wall", "-pthread", "-o", binary, source],
    }).output();
    if (!build.success) throw new Error(`gcc failed: ${new TextDecoder().decode(build.stderr)}`);
    const run = await new Deno.Command(binary, { args: [String(iterations)] }).output();
    return JSON.parse(new TextDecoder().decode(run.stdout));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const median = (values: number[]) => values.toSorted((a, b) => a - b)[values.length >> 1];
const spread = (values: number[]) =>
  `${median(values).toFixed(1)} (${Math.min(...values).toFixed(1)}-${
    Math.max(...values).toFixed(1)
  })`;

if (new URL(import.meta.url).searchParams.has("worker")) {
  serveWorker();
} else {
  const c: WakeCost[] = [];
  const deno: WakeCost[] = [];
  for (let round = 0; round < Number(values.rounds); round++) {
    c.push(await cCost());
    deno.push(await denoCost());
  }
  const load = Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(" ");
  console.log(
    `CPU per wake-up, µs, median (range) of ${values.rounds} rounds of ${iterations}; load ${load}`,
  );
  console.log("| wake-up                 | C thread | Deno worker |");
  console.log("| ----------------------- | -------- | ----------- |");
  for (const kind of ["timed", "notified"] as const) {
    const name = kind === "timed" ? "timed wait, 2 ms" : "notified every 2 ms";
    console.log(
      `| ${name.padEnd(23)} | ${spread(c.map((r) => r[kind]))} | ${
        spread(deno.map((r) => r[kind]))
      } |`,
    );
  }
}

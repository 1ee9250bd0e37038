/**
 * Samples a running Deno program's main thread through the inspector and prints where its
 * time goes, by function (self time) and by file.
 *
 *   BENCH_DENO_FLAGS=--inspect=127.0.0.1:9229 deno task bench --rates 100000 --duration 30 &
 *   deno run --allow-net --allow-write bench/profile.ts --port 9229 --after 10 --seconds 15
 *
 * `--out FILE` also writes the raw profile (`.cpuprofile`, for Chrome DevTools). The longest
 * stretches the thread was busy without a break are listed too, with what filled them: what
 * an event arriving then had to wait for.
 *
 * @module
 */
import { parseArgs } from "node:util";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

const { values } = parseArgs({
  options: {
    port: { type: "string", default: "9229" },
    after: { type: "string", default: "5" },
    seconds: { type: "string", default: "10" },
    top: { type: "string", default: "30" },
    out: { type: "string" },
  },
});

async function inspectorUrl(port: string): Promise<string> {
  const deadline = Date.now() + 120_000;
  while (true) {
    try {
      const targets = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json();
      return targets[0].webSocketDebuggerUrl;
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
}

const socket = new WebSocket(await inspectorUrl(values.port!));
await new Promise((resolve) => socket.addEventListener("open", resolve, { once: true }));
let nextId = 1;
const waiting = new Map<number, (result: unknown) => void>();
socket.addEventListener("message", (message) => {
  const reply = JSON.parse(message.data);
  waiting.get(reply.id)?.(reply.result);
});
function call(method: string, params: Record<string, unknown> = {}): Promise<unknown> {
  const id = nextId++;
  socket.send(JSON.stringify({ id, method, params }));
  return new Promise((resolve) => waiting.set(id, resolve));
}

await new Promise((resolve) => setTimeout(resolve, Number(values.after) * 1000));
await call("Profiler.enable");
await call("Profiler.setSamplingInterval", { interval: 200 });
await call("Profiler.start");
await new Promise((resolve) => setTimeout(resolve, Number(values.seconds) * 1000));
const { profile } = await call("Profiler.stop") as { profile: Profile };
socket.close();
if (values.out) await Deno.writeTextFile(values.out, JSON.stringify(profile));

const byNode = new Map<number, number>();
for (let i = 0; i < profile.samples.length; i++) {
  byNode.set(profile.samples[i], (byNode.get(profile.samples[i]) ?? 0) + profile.timeDeltas[i]);
}
const total = profile.timeDeltas.reduce((sum, delta) => sum + delta, 0);
const byFunction = new Map<string, number>();
const byFile = new Map<string, number>();
for (const node of profile.nodes) {
  const time = byNode.get(node.id) ?? 0;
  const { functionName, url, lineNumber } = node.callFrame;
  const file = url.replace(/^.*\/(src|ffi|node_modules|ext|deno)\//, "$1/") || "(native)";
  const name = `${functionName || "(anonymous)"} ${file}:${lineNumber + 1}`;
  byFunction.set(name, (byFunction.get(name) ?? 0) + time);
  byFile.set(file, (byFile.get(file) ?? 0) + time);
}
const print = (title: string, entries: Map<string, number>) => {
  console.log(`\n${title}`);
  for (
    const [name, time] of [...entries].sort((a, b) => b[1] - a[1]).slice(0, Number(values.top))
  ) {
    console.log(`${(time / total * 100).toFixed(1).padStart(5)}%  ${name}`);
  }
};
console.log(`${(total / 1e6).toFixed(1)} s sampled`);
print("self time by function", byFunction);
print("self time by file", byFile);

const nodes = new Map(profile.nodes.map((node) => [node.id, node]));
const label = (id: number) => {
  const { functionName, url, lineNumber } = nodes.get(id)!.callFrame;
  const file = url.replace(/^.*\/(src|ffi|node_modules|ext|deno)\//, "$1/") || "(native)";
  return `${functionName || "(anonymous)"} ${file}:${lineNumber + 1}`;
};
const stretches: { start: number; length: number; parts: Map<string, number> }[] = [];
let clock = 0;
let current: (typeof stretches)[number] | undefined;
for (let i = 0; i < profile.samples.length; i++) {
  clock += profile.timeDeltas[i];
  const name = label(profile.samples[i]);
  if (name.startsWith("(idle)")) {
    if (current) stretches.push(current);
    current = undefined;
    continue;
  }
  current ??= { start: clock, length: 0, parts: new Map() };
  current.length += profile.timeDeltas[i];
  current.parts.set(name, (current.parts.get(name) ?? 0) + profile.timeDeltas[i]);
}
if (current) stretches.push(current);
const busy = stretches.reduce((sum, stretch) => sum + stretch.length, 0);
console.log(
  `\nlongest busy stretches (of ${stretches.length}, ${(busy / 1e3).toFixed(0)} ms busy):`,
);
for (const stretch of stretches.sort((a, b) => b.length - a.length).slice(0, 12)) {
  const top = [...stretch.parts].sort((a, b) => b[1] - a[1]).slice(0, 3)
    .map(([name, time]) => `${name} ${(time / 1e3).toFixed(1)}`).join(", ");
  console.log(
    `${(stretch.length / 1e3).toFixed(1).padStart(6)} ms at ${
      (stretch.start / 1e6).toFixed(2)
    } s: ${top}`,
  );
}

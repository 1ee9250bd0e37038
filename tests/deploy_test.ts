/**
 * The host install: the systemd units pass `systemd-analyze verify` without a word, they say
 * what the collector relies on (the socket's name and credentials, the spool's directory, the
 * hardening), the sysctl.d file raises the queue, the environment file names only settings
 * that exist, and the collector tells a service manager when it is ready and when it stops.
 */
import assert from "node:assert/strict";
import { BatchReceiver, bindDatagramSocket, closeSocket } from "../ffi/unix_datagram.ts";
import { AF_UNIX, check, loadLibc, SOCK_DGRAM, sockaddrLength, sockaddrUn } from "../ffi/libc.ts";
import { VARIABLES } from "../src/ops/config.ts";
import { ServiceManager } from "../src/ops/service_manager.ts";
import { EVENTS_FD_NAME } from "../src/source/activation.ts";
import { spawnCollector } from "./support/collector_process.ts";
import { freePort } from "./support/services.ts";
import { waitFor } from "./support/wait.ts";

const deploy = new URL("../deploy/", import.meta.url).pathname;
const UNITS = ["tbg-collector.socket", "tbg-collector.service"];

/** `key=value` lines of a unit's `[section]`, repeated keys in order. */
function section(unit: string, name: string): Map<string, string[]> {
  const keys = new Map<string, string[]>();
  let inside = false;
  for (const line of Deno.readTextFileSync(`${deploy}systemd/${unit}`).split("\n")) {
    if (/^\s*(#|$)/.test(line)) continue;
    const header = line.match(/^\[(.+)\]$/);
    if (header) {
      inside = header[1] === name;
      continue;
    }
    const [key, value] = line.split(/=(.*)/s, 2);
    if (inside) keys.set(key.trim(), [...keys.get(key.trim()) ?? [], value.trim()]);
  }
  return keys;
}

/**
 * `systemd-analyze verify` of `units` in a scratch root holding them in /etc/systemd/system,
 * an executable at the unit's ExecStart and this machine's own system units: exit code and
 * everything it printed.
 */
async function verify(units: Record<string, string>): Promise<{ code: number; said: string }> {
  const root = await Deno.makeTempDir({ prefix: "tbg-systemd-" });
  try {
    await Deno.mkdir(`${root}/etc/systemd/system`, { recursive: true });
    await Deno.mkdir(`${root}/usr/local/bin`, { recursive: true });
    await Deno.mkdir(`${root}/usr/lib/systemd`, { recursive: true });
    await Deno.writeTextFile(`${root}/usr/local/bin/tbg-collector`, "#!/bin/sh\n", { mode: 0o755 });
    const copy = await new Deno.Command("cp", {
      args: ["-a", "/usr/lib/systemd/system", `${root}/usr/lib/systemd/`],
    }).output();
    assert.ok(copy.success, "copying the system units");
    for (const [name, text] of Object.entries(units)) {
      await Deno.writeTextFile(`${root}/etc/systemd/system/${name}`, text);
    }
    let output: Deno.CommandOutput;
    try {
      output = await new Deno.Command("systemd-analyze", {
        args: ["verify", `--root=${root}`, ...Object.keys(units)],
        stdout: "piped",
        stderr: "piped",
      }).output();
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) {
        throw new Error("systemd-analyze is not installed: apt-get install -y systemd");
      }
      throw error;
    }
    const said = new TextDecoder().decode(output.stdout) + new TextDecoder().decode(output.stderr);
    return { code: output.code, said: said.trim() };
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}

const shipped = () =>
  Object.fromEntries(
    UNITS.map((unit) => [unit, Deno.readTextFileSync(`${deploy}systemd/${unit}`)]),
  );

Deno.test("systemd-analyze verify accepts the units without a word", async () => {
  const { code, said } = await verify(shipped());
  assert.equal(said, "");
  assert.equal(code, 0);
});

Deno.test("systemd-analyze verify, as used here, does catch a mistake in a unit", async () => {
  const units = shipped();
  units["tbg-collector.service"] = units["tbg-collector.service"]
    .replace("ProtectHome=yes", "ProtectHome=yse");
  const { said } = await verify(units);
  assert.match(said, /protect home value/i);
});

Deno.test("the socket unit passes the socket the collector takes: named, with credentials", () => {
  const socket = section("tbg-collector.socket", "Socket");
  assert.deepEqual(socket.get("FileDescriptorName"), [EVENTS_FD_NAME]);
  assert.equal(socket.get("ListenDatagram")?.length, 1);
  assert.match(socket.get("ListenDatagram")![0], /^\/run\/tbg-collector\/[^/]+\.sock$/);
  assert.deepEqual(socket.get("PassCredentials"), ["yes"]);
  assert.deepEqual(socket.get("SocketMode"), ["0660"]);
  assert.ok(socket.get("SocketGroup")?.[0], "SocketGroup: ckpool's group may send");
  assert.ok(socket.get("ReceiveBuffer")?.[0]);
  assert.deepEqual(socket.get("Service"), ["tbg-collector.service"]);
});

Deno.test("the service unit: notify, always restarted, its own user and state, hardened", () => {
  const service = section("tbg-collector.service", "Service");
  const one = (key: string) => {
    const values = service.get(key);
    assert.equal(values?.length, 1, `${key} set once`);
    return values![0];
  };
  assert.equal(one("Type"), "notify");
  assert.equal(one("Restart"), "always");
  assert.equal(one("StateDirectory"), "tbg-collector");
  assert.deepEqual(service.get("Environment"), ["SPOOL_DIR=/var/lib/tbg-collector/spool"]);
  assert.equal(one("EnvironmentFile"), "/etc/tbg-collector/collector.env");
  assert.equal(one("User"), "tbg-collector");
  for (const key of ["NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices"]) {
    assert.equal(one(key), "yes", key);
  }
  assert.equal(one("ProtectSystem"), "strict");
  assert.equal(one("RestrictAddressFamilies"), "AF_UNIX AF_INET AF_INET6");
  assert.equal(one("CapabilityBoundingSet"), "");
  assert.match(one("MemoryMax"), /^\d+[MG]$/);
  // The stop waits for SHUTDOWN_TIMEOUT (default 30 s) before systemd's own deadline.
  assert.ok(Number.parseInt(one("TimeoutStopSec")) > Number(VARIABLES.SHUTDOWN_TIMEOUT.fallback));
  const unit = section("tbg-collector.service", "Unit");
  assert.ok(unit.get("Requires")?.includes("tbg-collector.socket"));
});

Deno.test("the sysctl.d file raises net.unix.max_dgram_qlen well above the kernel's 10", () => {
  const text = Deno.readTextFileSync(`${deploy}sysctl.d/60-tbg-collector.conf`);
  const value = text.match(/^net\.unix\.max_dgram_qlen\s*=\s*(\d+)\s*$/m);
  assert.ok(value, "sets net.unix.max_dgram_qlen");
  assert.ok(Number(value[1]) >= 1024);
});

Deno.test("the environment file names only settings the collector has", () => {
  const text = Deno.readTextFileSync(`${deploy}systemd/collector.env`);
  const names = [...text.matchAll(/^([A-Z_]+)=/gm)].map((m) => m[1]);
  assert.ok(names.includes("REDIS_URL") && names.includes("DATABASE_URL"));
  for (const name of names) assert.ok(Object.hasOwn(VARIABLES, name), `${name} is a setting`);
});

Deno.test("the collector tells the service manager READY=1 once receiving, STOPPING=1 on stop", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tbg-notify-" });
  const notify = bindDatagramSocket(`${dir}/notify`, { mode: 0o600, receiveBufferBytes: 65536 });
  const receiver = new BatchReceiver(notify.fd, 8, 4096, 100);
  const heard: string[] = [];
  const listen = () => {
    const count = receiver.receive(false);
    for (let i = 0; i < count; i++) {
      heard.push(new TextDecoder().decode(receiver.datagram(i).bytes));
    }
    receiver.consume();
  };
  const collector = spawnCollector({
    SOCKET_PATH: `${dir}/events.sock`,
    REDIS_URL: `redis://127.0.0.1:${freePort()}/0`,
    DATABASE_URL: `postgres://nobody@127.0.0.1:${freePort()}/none`,
    NOTIFY_SOCKET: `${dir}/notify`,
  });
  try {
    await waitFor(() => {
      listen();
      return heard.some((m) => m.split("\n").includes("READY=1"));
    }, { what: "READY=1", timeoutMs: 60_000 });
    const ready = heard.find((m) => m.includes("READY=1"))!;
    assert.match(ready, new RegExp(`^STATUS=receiving on ${dir}/events.sock$`, "m"));
    assert.match(ready, new RegExp(`^MAINPID=${collector.child.pid}$`, "m"));
    // The log line was written before READY=1; the pipe may deliver it a moment later.
    await collector.waitForOutput(/listening on/, 10_000);
    collector.child.kill("SIGTERM");
    await waitFor(() => {
      listen();
      return heard.some((m) => m.split("\n").includes("STOPPING=1"));
    }, { what: "STOPPING=1", timeoutMs: 60_000 });
  } finally {
    await collector.stop("SIGKILL");
    closeSocket(notify.fd);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a NOTIFY_SOCKET in the abstract namespace (@name) is reached too", () => {
  const libc = loadLibc();
  const name = `@tbg-notify-${crypto.randomUUID()}`;
  const fd = check(libc.socket(AF_UNIX, SOCK_DGRAM, 0), "socket");
  try {
    check(libc.bind(fd, sockaddrUn(name), sockaddrLength(name)), "bind");
    const manager = new ServiceManager({ NOTIFY_SOCKET: name });
    assert.ok(manager.present);
    manager.stopping();
    manager.close();
    const receiver = new BatchReceiver(fd, 1, 4096, 1000);
    assert.equal(receiver.receive(true), 1);
    assert.match(new TextDecoder().decode(receiver.datagram(0).bytes), /^STOPPING=1$/m);
    assert.equal(new ServiceManager({}).present, false);
  } finally {
    libc.close(fd);
  }
});

Deno.test("the binary carries every worker module, and the compile task names no other", () => {
  const root = new URL("../", import.meta.url).pathname;
  const config = JSON.parse(Deno.readTextFileSync(`${root}deno.json`));
  const included = [...(config.tasks.compile as string).matchAll(/--include (\S+)/g)]
    .map((match) => match[1]).sort();
  // A worker is started from its own module at run time: `deno compile` finds it only when
  // it is named, and a binary without it fails only when it starts that thread.
  const workers: string[] = [];
  const walk = (dir: string) => {
    for (const entry of Deno.readDirSync(`${root}${dir}`)) {
      const path = `${dir}/${entry.name}`;
      if (entry.isDirectory) walk(path);
      else if (/(^|_)worker\.ts$/.test(entry.name)) workers.push(path);
    }
  };
  walk("src");
  assert.deepEqual(included, workers.sort());
});

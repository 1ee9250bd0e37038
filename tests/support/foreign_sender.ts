/**
 * Sending datagrams as another user: a tiny native sender (`send_datagram.c`, compiled on
 * first use with gcc) started through `setpriv` with another real uid and gid, so tests can
 * see what the collector does with senders it does not trust.
 *
 * @module
 */

import { compileC } from "./compile_c.ts";

const SOURCE = new URL("./send_datagram.c", import.meta.url);

/** Looks a program up in `PATH` without running it. */
function findProgram(name: string): string | undefined {
  for (const dir of (Deno.env.get("PATH") ?? "/usr/bin:/bin").split(":")) {
    try {
      if (Deno.statSync(`${dir}/${name}`).isFile) return `${dir}/${name}`;
    } catch {
      // not here
    }
  }
  return undefined;
}

/**
 * Why sending as another uid cannot work here, or `undefined` if it can. Synchronous, for
 * `Deno.test`'s `ignore`.
 */
export function foreignSenderUnavailable(): string | undefined {
  if (Deno.build.os !== "linux") return "needs Linux (SO_PASSCRED)";
  if (Deno.uid() !== 0) return "needs root to run a sender under another uid";
  if (!findProgram("setpriv")) return "needs setpriv (util-linux)";
  if (!findProgram("gcc")) return "needs gcc to build the sender";
  return undefined;
}

/** Compiles the sender (once per process) where any uid may run it; returns the binary. */
export function buildDatagramSender(): Promise<string> {
  return compileC(SOURCE, [], "gcc");
}

/** Who {@link sendAs} sends as. */
export interface ForeignUser {
  readonly uid: number;
  readonly gid: number;
}

/**
 * Sends each message as one datagram to `socketPath`, from a process running as `user`
 * (real and effective ids, no supplementary groups). The socket and every directory above it
 * must let that user in.
 *
 * @returns the sending process's pid (setpriv execs the sender, so it keeps setpriv's pid)
 */
export async function sendAs(
  user: ForeignUser,
  socketPath: string,
  messages: readonly string[],
): Promise<number> {
  const binary = await buildDatagramSender();
  const child = new Deno.Command("setpriv", {
    args: [
      `--reuid=${user.uid}`,
      `--regid=${user.gid}`,
      "--clear-groups",
      binary,
      socketPath,
      ...messages,
    ],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const output = await child.output();
  if (!output.success) {
    throw new Error(
      `sending as uid ${user.uid} failed (exit ${output.code}): ${
        new TextDecoder().decode(output.stderr).trim()
      }`,
    );
  }
  return child.pid;
}

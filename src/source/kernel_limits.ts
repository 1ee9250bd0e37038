/**
 * Kernel settings that decide whether bursts of events survive in the socket queue.
 *
 * @module
 */

/** Below this, a burst of events overflows the kernel queue before it can be read. */
const MIN_DGRAM_QLEN = 1024;
const QLEN_PATH = "/proc/sys/net/unix/max_dgram_qlen";

/** `net.unix.max_dgram_qlen` of this network namespace, or undefined where unreadable. */
export function readMaxDgramQlen(path = QLEN_PATH): number | undefined {
  try {
    const value = Number(Deno.readTextFileSync(path).trim());
    return Number.isInteger(value) ? value : undefined;
  } catch {
    return undefined;
  }
}

/** A warning for the operator when the queue limit is too low, else undefined. */
export function qlenWarning(qlen: number | undefined): string | undefined {
  if (qlen === undefined || qlen >= MIN_DGRAM_QLEN) return undefined;
  return `net.unix.max_dgram_qlen is ${qlen}: in a burst the kernel drops events before the ` +
    `collector can read them (ckpool counts them as failed sends). Raise it before starting ` +
    `the collector: sysctl -w net.unix.max_dgram_qlen=4096 (per network namespace; in ` +
    `compose: sysctls: net.unix.max_dgram_qlen: 4096)`;
}

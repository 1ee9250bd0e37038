/**
 * Tells a service manager how the collector is doing (`sd_notify`): `READY=1` once the
 * socket is taken and the spool and sinks are started (for `Type=notify`), `STOPPING=1`
 * when a stop begins, and a `STATUS=` line. Does nothing without `NOTIFY_SOCKET`, so the
 * same binary runs under systemd, in a container or by hand.
 *
 * @module
 */
import { DatagramSender } from "../../ffi/unix_datagram.ts";

/** Sends service-manager notifications to `NOTIFY_SOCKET`, if it is set. */
export class ServiceManager {
  readonly #sender: DatagramSender | undefined;

  constructor(env: Readonly<Record<string, string | undefined>> = Deno.env.toObject()) {
    const path = env.NOTIFY_SOCKET;
    this.#sender = path ? new DatagramSender(path, 64 * 1024) : undefined;
  }

  /** Whether a service manager is listening. */
  get present(): boolean {
    return this.#sender !== undefined;
  }

  /** `READY=1` with a status line. */
  ready(status: string): void {
    this.#send(`READY=1\nSTATUS=${status}\nMAINPID=${Deno.pid}`);
  }

  /** `STOPPING=1`. */
  stopping(): void {
    this.#send("STOPPING=1\nSTATUS=stopping: delivering what is spooled");
  }

  close(): void {
    this.#sender?.close();
  }

  #send(message: string): void {
    // A notification that cannot be sent changes nothing for the collector itself.
    this.#sender?.send(new TextEncoder().encode(message));
  }
}

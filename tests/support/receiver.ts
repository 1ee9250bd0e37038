/** The receive thread for tests, with a spool of its own beside the socket. */
import { type Receiver, type ReceiverOptions, startReceiver } from "../../src/receiver.ts";
import { Spool } from "../../src/spool.ts";

/** A receiver whose spool is `${path}.spool`, closed when the receiver stops. */
export function startSpooledReceiver(
  options: Omit<ReceiverOptions, "spool"> & { readonly spoolMaxBytes?: number },
): Receiver & { readonly spool: Spool } {
  const spool = Spool.open({
    dir: `${options.path}.spool`,
    maxBytes: options.spoolMaxBytes ?? 256 * 1024 * 1024,
    fsyncIntervalMs: 1000,
    readers: ["test"],
  });
  let receiver: Receiver;
  try {
    receiver = startReceiver({ ...options, spool });
  } catch (error) {
    void spool.close();
    throw error;
  }
  return {
    spool,
    path: receiver.path,
    receiveBufferBytes: receiver.receiveBufferBytes,
    stop: async () => {
      await receiver.stop();
      await spool.close();
    },
  };
}

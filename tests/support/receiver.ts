/** The receive thread for tests, with a spool of its own beside the socket. */
import { Spool, type SpoolRecord } from "../../src/buffer/spool.ts";
import { type Receiver, type ReceiverOptions, startReceiver } from "../../src/source/receiver.ts";

/** A receiver whose spool is `${path}.spool`, closed when the receiver stops. */
export interface SpooledReceiver extends Receiver {
  readonly spool: Spool;
  /** Every record spooled so far, in order. */
  records(): SpoolRecord[];
  /** The spooled datagrams as text, in order. */
  texts(): string[];
}

/** Starts a receiver on a spool of its own; stopping it closes the spool too. */
export function startSpooledReceiver(
  options: Omit<ReceiverOptions, "spool" | "onError"> & {
    readonly onError?: (message: string) => void;
  },
): SpooledReceiver {
  const spool = Spool.open({
    dir: `${options.path}.spool`,
    maxBytes: 256 * 1024 * 1024,
    fsyncIntervalMs: 1000,
    readers: ["test"],
  });
  let receiver: Receiver;
  try {
    receiver = startReceiver({
      onError: (message) => {
        throw new Error(`receive thread failed: ${message}`);
      },
      ...options,
      spool,
    });
  } catch (error) {
    void spool.close();
    throw error;
  }
  const records = () => spool.read(0, Number.MAX_SAFE_INTEGER);
  const decoder = new TextDecoder();
  return {
    spool,
    records,
    texts: () => records().map((record) => decoder.decode(record.bytes)),
    path: receiver.path,
    inherited: receiver.inherited,
    receiveBufferBytes: receiver.receiveBufferBytes,
    counts: () => receiver.counts(),
    stop: async () => {
      await receiver.stop();
      await spool.close();
    },
  };
}

/**
 * Worker module: the centre on its own thread (see `collector_thread.ts`). It reads the spool
 * as the sinks do, from the first record of this run, and counts every record once.
 *
 * @module
 */
/// <reference lib="deno.worker" />
import { setThreadName, setThreadNice } from "../ffi/libc.ts";
import { followSpool } from "./buffer/follow.ts";
import { SpoolReader } from "./buffer/reader.ts";
import { SpoolSignals } from "./buffer/signals.ts";
import { Collector } from "./collector.ts";
import type { FromCentre, ToCentre } from "./collector_thread.ts";
import { configureLogging } from "./ops/log.ts";

/** Bytes of records validated in one go before the thread looks at its messages again. */
const READ_BYTES = 4 * 1024 * 1024;
/** How often changed counters are posted. */
const REPORT_MS = 100;
/** How long a wait for new records lasts before the thread looks around again. */
const IDLE_MS = 50;
/**
 * After a read that left nothing behind, how long the thread lets records gather before it
 * reads again: counts need to be fresh to a tenth of a second, and every wake-up costs more
 * than a record.
 */
const LINGER_MS = 50;

const scope = self as unknown as {
  postMessage(message: FromCentre): void;
  onmessage: ((event: MessageEvent<ToCentre>) => void) | null;
};
const collector = new Collector();
let reader: SpoolReader | undefined;
let running = true;
let loop: Promise<void> = Promise.resolve();
let drains: { id: number; until: number }[] = [];
let reported = -1;

function answerDrains(): void {
  const next = reader!.next;
  const done = drains.filter((drain) => drain.until <= next);
  if (done.length === 0) return;
  drains = drains.filter((drain) => drain.until > next);
  for (const { id } of done) {
    scope.postMessage({ type: "drained", id, counters: collector.counters() });
  }
}

const timer = setInterval(() => {
  const counters = collector.counters();
  if (counters.received === reported) return;
  reported = counters.received;
  scope.postMessage({ type: "counters", counters });
}, REPORT_MS);

scope.onmessage = async (event) => {
  const message = event.data;
  switch (message.type) {
    case "start": {
      setThreadNice(message.nice);
      setThreadName("tbg-centre");
      if (message.logLevel) await configureLogging(message.logLevel);
      const signals = new SpoolSignals(message.signals);
      reader = new SpoolReader(message.dir, message.from, signals);
      loop = followSpool({
        reader,
        signals,
        idleMs: IDLE_MS,
        lingerMs: LINGER_MS,
        running: () => running,
        look: answerDrains,
        room: () => READ_BYTES,
        take: (records) => {
          collector.ingest(records);
          answerDrains();
        },
      });
      return;
    }
    case "drain":
      drains.push({ id: message.id, until: message.until });
      if (reader) answerDrains();
      return;
    case "close":
      running = false;
      clearInterval(timer);
      await loop;
      reader?.close();
      scope.postMessage({ type: "closed", counters: collector.counters() });
      return;
  }
};

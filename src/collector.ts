/**
 * The collector's centre: validates spooled datagrams and counts what it sees (accepted
 * events by type, rejects by reason, events the emitters numbered that never arrived). It
 * knows nothing of any backend. It runs on the thread of a sink that decodes every record
 * anyway, and counts that decode (`centre_tap.ts`), so no thread reads and decodes the spool
 * only to count it.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { SpoolRecord } from "./buffer/spool.ts";
import {
  decodeDatagram,
  type DecodeResult,
  REJECT_REASONS,
  type RejectReason,
} from "./datagram.ts";
import type { MiningEvent } from "./events.ts";
import { RateLimitedLog } from "./ops/log.ts";
import { SeqTracker } from "./seq_tracker.ts";

/** Distinct event types counted by name; more are counted under `other`. */
const MAX_COUNTED_TYPES = 64;

/** What the centre has seen so far. */
export interface CollectorCounters {
  /** Datagrams taken off the socket. */
  readonly received: number;
  /** Datagrams that became events. */
  readonly accepted: number;
  /** Rejected datagrams, by reason. */
  readonly invalid: Readonly<Record<RejectReason, number>>;
  /** Accepted events, by type. */
  readonly byType: Readonly<Record<string, number>>;
  /** Events the emitters numbered that never arrived. */
  readonly lost: number;
  /** Emitter restarts seen in `seq`. */
  readonly emitterRestarts: number;
}

/** Counters with nothing counted. */
export function noCounters(): CollectorCounters {
  return {
    received: 0,
    accepted: 0,
    invalid: Object.fromEntries(REJECT_REASONS.map((reason) => [reason, 0])) as Record<
      RejectReason,
      number
    >,
    byType: {},
    lost: 0,
    emitterRestarts: 0,
  };
}

/** Validates datagrams and counts them. */
export class Collector {
  readonly #seq = new SeqTracker();
  readonly #invalidLog = new RateLimitedLog(getLogger(["tbg", "collector"]));
  #received = 0;
  #accepted = 0;
  readonly #invalid = { ...noCounters().invalid };
  readonly #byType = new Map<string, number>();

  /** Validates and counts `records`, in spool order; returns the events among them. */
  ingest(records: readonly SpoolRecord[]): MiningEvent[] {
    const events: MiningEvent[] = [];
    for (const record of records) {
      const event = this.count(
        decodeDatagram(record.bytes, record.truncated),
        record.bytes.length,
      );
      if (event) events.push(event);
    }
    return events;
  }

  counters(): CollectorCounters {
    return {
      received: this.#received,
      accepted: this.#accepted,
      invalid: { ...this.#invalid },
      byType: Object.fromEntries(this.#byType),
      lost: this.#seq.lost,
      emitterRestarts: this.#seq.restarts,
    };
  }

  /**
   * Counts one datagram that was decoded elsewhere (on a sink's thread, which decodes every
   * record anyway); returns its event, if it is one.
   *
   * @param result what {@link decodeDatagram} made of the datagram
   * @param bytes the datagram's length, for the log line of a rejected one
   */
  count(result: DecodeResult, bytes: number): MiningEvent | undefined {
    this.#received++;
    if (!result.ok) {
      this.#invalid[result.reason]++;
      this.#invalidLog.warn("rejected a datagram ({reason}): {detail}", {
        reason: result.reason,
        detail: result.detail,
        bytes,
      });
      return undefined;
    }
    const event = result.event;
    this.#accepted++;
    const type = this.#byType.has(event.event) || this.#byType.size < MAX_COUNTED_TYPES
      ? event.event
      : "other";
    this.#byType.set(type, (this.#byType.get(type) ?? 0) + 1);
    if (event.seq !== undefined) this.#seq.observe(event.emitter ?? event.source, event.seq);
    return event;
  }
}

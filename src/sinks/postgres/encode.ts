/**
 * A batch turned into what one transaction sends: `mining_events` and `shares` rows as COPY
 * text, the state tables' rows as one JSON document each (rules in `batch.ts`). Encoding
 * runs in slices with a pause between them, so that on the sink's thread the database's
 * replies to the batch before are handled while the next one is encoded.
 *
 * @module
 */
import { BatchBuilder, eventsCopy, sharesCopy, toJson, withoutRepeats } from "./batch.ts";
import type { MiningEvent } from "../../events.ts";
import { errorText, UnencodableBatch } from "./failure.ts";

/** What one transaction writes. */
export interface EncodedBatch {
  /** The batch without events repeated inside it (the first of each id is kept). */
  readonly fresh: readonly MiningEvent[];
  /** `mining_events` rows, COPY text in pieces. */
  readonly events: readonly string[];
  /** `shares` rows, COPY text in pieces; empty when the batch holds no share. */
  readonly shares: readonly string[];
  /** JSON documents of the state tables' rows, undefined when a table gets none. */
  readonly users: string | undefined;
  readonly workers: string | undefined;
  readonly blocks: string | undefined;
  readonly weekly: string | undefined;
}

/**
 * Largest text a batch may send, in characters. A batch of big payloads beyond it is split
 * like a refused one; PostgreSQL cannot take a single value over 1 GB anyway.
 */
const MAX_BATCH_CHARS = 64 * 1024 * 1024;

/** Events encoded between two pauses: a few milliseconds of work. */
const SLICE_EVENTS = 2_000;

/**
 * Encodes `batch`, calling `pause` between slices of it (never when it fits in one).
 * Throws {@link UnencodableBatch} when it cannot, or when a batch of more than one event
 * would send more than 64 Mi characters.
 */
export async function encodeBatch(
  batch: readonly MiningEvent[],
  pause?: () => Promise<void>,
): Promise<EncodedBatch> {
  const fresh = withoutRepeats(batch);
  const builder = new BatchBuilder();
  const events: string[] = [];
  const shares: string[] = [];
  let chars = 0;
  try {
    for (let from = 0; from < fresh.length; from += SLICE_EVENTS) {
      if (from > 0) await pause?.();
      const to = Math.min(fresh.length, from + SLICE_EVENTS);
      const sharesFrom = builder.shares.length;
      for (let i = from; i < to; i++) builder.add(fresh[i]);
      events.push(eventsCopy(builder.events, from, to));
      if (builder.shares.length > sharesFrom) {
        shares.push(sharesCopy(builder.shares, sharesFrom, builder.shares.length));
      }
      chars += events[events.length - 1].length + (shares[shares.length - 1]?.length ?? 0);
    }
  } catch (error) {
    throw new UnencodableBatch(`cannot encode batch: ${errorText(error)}`, { cause: error });
  }
  const rows = builder.rows();
  const doc = (list: unknown[]) => list.length > 0 ? toJson(list) : undefined;
  const encoded: EncodedBatch = {
    fresh,
    events,
    shares,
    users: doc(rows.users),
    workers: doc(rows.workers),
    blocks: doc(rows.blocks),
    weekly: doc(rows.weekly),
  };
  for (const text of [encoded.users, encoded.workers, encoded.blocks, encoded.weekly]) {
    chars += text?.length ?? 0;
  }
  if (chars > MAX_BATCH_CHARS && batch.length > 1) {
    throw new UnencodableBatch(`batch too large (${chars} characters of JSON and COPY text)`);
  }
  return encoded;
}

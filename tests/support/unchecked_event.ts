/**
 * Events that validation would refuse, for testing a sink's own defences (which must cope
 * with anything handed to it, whatever the contract lets through).
 *
 * @module
 */
import assert from "node:assert/strict";
import { type MiningEvent, parseEvent } from "../../src/events.ts";

/**
 * `base`, a parsed event, with the given `data` fields set to values past validation (NUL,
 * lone surrogates, nesting deeper than `MAX_DATA_DEPTH`...); the rest of its data is kept.
 * Throws unless the contract really refuses the result, so a test that means to exercise
 * a sink's defence cannot silently exercise a clean event instead.
 *
 * The id stays `base`'s (the hash of its clean content, or its emitter and seq): give each
 * event a distinct base to keep ids unique.
 */
export function unchecked(base: MiningEvent, data: Record<string, unknown>): MiningEvent {
  const event: MiningEvent = { ...base, data: { ...base.data, ...data } };
  const { event: type, ts, source, seq, emitter } = event;
  const parsed = parseEvent({ event: type, ts, source, seq, emitter, data: event.data });
  assert.equal(
    parsed.ok,
    false,
    `validation accepts this ${type} event; it does not test anything past validation`,
  );
  return event;
}

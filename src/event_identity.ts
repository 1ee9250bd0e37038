/**
 * The identity of an event: one string that names the same event however often it is
 * delivered, so that storage can keep it once and consumers can drop repeats.
 *
 * - An event that carries both `emitter` and `seq` is `{emitter}:{seq}`. The patched ckpool
 *   picks a random 16-hex-digit emitter id at each start and counts `seq` from 1, so the pair
 *   names one event for ever, and costs no hashing on the hot path.
 * - Any other event is `sha256:` and the first 32 hex digits (128 bits) of the SHA-256 of
 *   the datagram's bytes. A resend of the same bytes gets the same id; two different events
 *   that happened to be sent as identical bytes (same type, `ts` to the microsecond, source
 *   and data) would count as one, which only an emitter without `seq` can produce.
 *
 * The two forms cannot collide: an emitter id is hex, and `sha256` is not.
 *
 * @module
 */
import { createHash } from "node:crypto";

/** Prefix of identities derived from the datagram's content. */
export const CONTENT_ID_PREFIX = "sha256:";

/** Hex digits of the SHA-256 kept in a content identity (128 bits). */
const CONTENT_ID_HEX_DIGITS = 32;

/**
 * The identity of an event from its emitter and sequence number, or from its content when
 * either is missing.
 *
 * @param emitter the event's `emitter`, if it has one
 * @param seq the event's `seq`, if it has one
 * @param content the datagram's bytes as received, or a function giving the text to hash
 *   (for events built in code, which have no bytes); used only when `emitter` or `seq` is
 *   missing, so the function is not called otherwise
 */
export function eventId(
  emitter: string | undefined,
  seq: number | undefined,
  content: Uint8Array | (() => string),
): string {
  if (emitter !== undefined && seq !== undefined) return `${emitter}:${seq}`;
  return contentId(typeof content === "function" ? content() : content);
}

/** `sha256:` and the first 32 hex digits of the SHA-256 of `content` (UTF-8 when text). */
export function contentId(content: Uint8Array | string): string {
  const digest = createHash("sha256").update(content).digest("hex");
  return CONTENT_ID_PREFIX + digest.slice(0, CONTENT_ID_HEX_DIGITS);
}

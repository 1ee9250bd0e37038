/**
 * Turns one datagram's bytes into a validated event, or names why it was rejected.
 *
 * @module
 */
import { type MiningEvent, parseEvent } from "./events.ts";

/** Why a datagram was rejected. */
export type RejectReason =
  | "oversized"
  | "not_utf8"
  | "not_json"
  | "invalid_envelope"
  | "invalid_data"
  /** Refused on the receive thread: the sender's uid is not in `ALLOWED_SENDER_UIDS`. */
  | "unauthorized_sender";

/** Every reject reason, for counters. */
export const REJECT_REASONS: readonly RejectReason[] = [
  "oversized",
  "not_utf8",
  "not_json",
  "invalid_envelope",
  "invalid_data",
  "unauthorized_sender",
];

/** Outcome of {@link decodeDatagram}. */
export type DecodeResult =
  | { readonly ok: true; readonly event: MiningEvent }
  | { readonly ok: false; readonly reason: RejectReason; readonly detail: string };

const utf8 = new TextDecoder("utf-8", { fatal: true });
// Several times faster than the fatal decoder; its result is kept only when it holds no U+FFFD,
// the character the lax decoder puts where the bytes are not UTF-8.
const laxUtf8 = new TextDecoder("utf-8");

/**
 * Decodes and validates one datagram. The event's `id` is `{emitter}:{seq}`, or the hash of
 * these bytes when either is missing (`event_identity.ts`), so a datagram decoded again, e.g.
 * from a spool after a restart, gets the same id.
 *
 * @param bytes the datagram as received
 * @param truncated whether the receiver had to cut it
 */
export function decodeDatagram(bytes: Uint8Array, truncated: boolean): DecodeResult {
  if (truncated) {
    return { ok: false, reason: "oversized", detail: `larger than the receive slot` };
  }
  let text = laxUtf8.decode(bytes);
  try {
    if (text.includes("\uFFFD")) text = utf8.decode(bytes);
  } catch {
    return { ok: false, reason: "not_utf8", detail: `${bytes.length} bytes, not valid UTF-8` };
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    return { ok: false, reason: "not_json", detail: (error as Error).message };
  }
  return parseEvent(value, bytes);
}

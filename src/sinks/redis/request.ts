/**
 * The Redis sink's requests: each event becomes `XADD mining:{event} MAXLEN ~ {cap} * id …
 * event … ts … source … data …`, and a `block_found` also a `PUBLISH blocks:found {event}`.
 * They are written as RESP straight into one buffer that every batch reuses: the parts that
 * are the same for every event of a type are encoded once, and no command array or string of
 * the whole pipeline is built per event.
 *
 * @module
 */
import { decodeDatagram } from "../../datagram.ts";
import type { MiningEvent } from "../../events.ts";
import { PlainEventScanner } from "../../plain_event.ts";
import { arrayHeader, bulkString, concatBytes } from "./resp.ts";

/** Channel on which `block_found` events are published. */
export const BLOCKS_CHANNEL = "blocks:found";

/** Stream key of an event type. */
export function streamKey(eventType: string): string {
  return `mining:${eventType}`;
}

/** The Redis commands that deliver one event, as argument lists (what {@link RequestBuilder} writes). */
export function commandsFor(event: MiningEvent, streamMaxLen: string): string[][] {
  const xadd = [
    "XADD",
    streamKey(event.event),
    "MAXLEN",
    "~",
    streamMaxLen,
    "*",
    "id",
    event.id,
    "event",
    event.event,
    "ts",
    String(event.ts),
    "source",
    event.source,
    "data",
    JSON.stringify(event.data),
  ];
  if (event.event !== "block_found") return [xadd];
  return [xadd, ["PUBLISH", BLOCKS_CHANNEL, JSON.stringify(event)]];
}

const encoder = new TextEncoder();
/** Texts shorter than this are copied in JavaScript; longer ones by the encoder. */
const SHORT_TEXT = 64;
const FIELD_EVENT = bulkString("event");
const FIELD_TS = bulkString("ts");
const FIELD_SOURCE = bulkString("source");
const FIELD_DATA = bulkString("data");
const PUBLISH_PREFIX = concatBytes([
  arrayHeader(3),
  bulkString("PUBLISH"),
  bulkString(BLOCKS_CHANNEL),
]);

/** Builds the RESP of a batch's commands in one reused, growing buffer. */
export class RequestBuilder {
  readonly #maxLen: string;
  /** By event type: everything of its XADD up to the `id` value's bulk header. */
  readonly #prefixes = new Map<string, Uint8Array>();
  #bytes = new Uint8Array(256 * 1024);
  #length = 0;
  /** For each command written, the index of the event it delivers. */
  #owners: number[] = [];
  readonly #plain = new PlainEventScanner();

  /** @param streamMaxLen the approximate length cap of each stream */
  constructor(streamMaxLen: number) {
    this.#maxLen = String(streamMaxLen);
  }

  /** Commands written since the last {@link clear}. */
  get commands(): number {
    return this.#owners.length;
  }

  /** The index, among the events added, of the event command `command` delivers. */
  owner(command: number): number {
    return this.#owners[command];
  }

  /** The RESP written so far; valid until the next change. */
  bytes(): Uint8Array {
    return this.#bytes.subarray(0, this.#length);
  }

  /** Starts an empty batch. */
  clear(): void {
    this.#length = 0;
    this.#owners = [];
  }

  /** Writes the commands of `event`, the `index`th of the batch. */
  add(event: MiningEvent, index: number): void {
    const data = JSON.stringify(event.data);
    this.#xadd(event.event, event.id, String(event.ts), event.source, data, index);
    if (event.event === "block_found") {
      this.#raw(PUBLISH_PREFIX);
      this.#bulk(JSON.stringify(event));
      this.#owners.push(index);
    }
  }

  /**
   * Writes the commands of the event a datagram holds, the `index`th of the batch; false,
   * and nothing written, if the datagram is not an event. A plain datagram (`plain_event.ts`)
   * is written from its bytes; any other is decoded first.
   */
  addDatagram(bytes: Uint8Array, truncated: boolean, index: number): boolean {
    const plain = this.#plain;
    if (truncated || !plain.scan(bytes)) {
      const decoded = decodeDatagram(bytes, truncated);
      if (decoded.ok) this.add(decoded.event, index);
      return decoded.ok;
    }
    this.#xadd(plain.type, plain.id(), plain.ts, plain.source, plain.payload(), index);
    return true;
  }

  /** The event's `XADD`; the id and the payload as text, or as their UTF-8 bytes. */
  #xadd(
    type: string,
    id: string | Uint8Array,
    ts: string,
    source: string,
    data: string | Uint8Array,
    index: number,
  ): void {
    this.#raw(this.#prefix(type));
    if (typeof id === "string") this.#bulk(id);
    else this.#bulkBytes(id);
    this.#raw(FIELD_EVENT);
    this.#bulk(type);
    this.#raw(FIELD_TS);
    this.#bulk(ts);
    this.#raw(FIELD_SOURCE);
    this.#bulk(source);
    this.#raw(FIELD_DATA);
    if (typeof data === "string") this.#bulk(data);
    else this.#bulkBytes(data);
    this.#owners.push(index);
  }

  #prefix(type: string): Uint8Array {
    let prefix = this.#prefixes.get(type);
    if (prefix === undefined) {
      // 16 arguments: these 7, then id's value and the 4 other fields with their values.
      prefix = concatBytes([
        arrayHeader(16),
        ...["XADD", streamKey(type), "MAXLEN", "~", this.#maxLen, "*", "id"].map(bulkString),
      ]);
      this.#prefixes.set(type, prefix);
    }
    return prefix;
  }

  #reserve(bytes: number): void {
    if (this.#length + bytes <= this.#bytes.length) return;
    const grown = new Uint8Array(Math.max(this.#bytes.length * 2, this.#length + bytes));
    grown.set(this.#bytes.subarray(0, this.#length));
    this.#bytes = grown;
  }

  #raw(part: Uint8Array): void {
    this.#reserve(part.length);
    this.#bytes.set(part, this.#length);
    this.#length += part.length;
  }

  /**
   * `$<bytes>\r\n<text>\r\n`. The header is written for the text's length in UTF-16 units,
   * which is its length in bytes when it is ASCII (all but a few payloads); otherwise the
   * encoded bytes are moved to follow the header of their real length.
   */
  #bulk(text: string): void {
    // Room for the text at 3 bytes per UTF-16 unit, its length in digits and the CRLFs.
    this.#reserve(text.length * 3 + 32);
    const bytes = this.#bytes;
    const guess = this.#header(this.#length, text.length);
    const written = text.length < SHORT_TEXT
      ? this.#copyAscii(text, guess)
      : encoder.encodeInto(text, bytes.subarray(guess)).written;
    let end = guess + written;
    if (written !== text.length) {
      // Not ASCII: the real header is as long or longer, so the bytes move right, if at all,
      // before it is written over their start.
      const at = guess + String(written).length - String(text.length).length;
      if (at !== guess) bytes.copyWithin(at, guess, end);
      this.#header(this.#length, written);
      end = at + written;
    }
    bytes[end] = 13;
    bytes[end + 1] = 10;
    this.#length = end + 2;
  }

  /**
   * Copies `text` to `at` if it is ASCII and returns its length; otherwise encodes it there
   * and returns the bytes written. Short texts are copied in JavaScript, faster than a call
   * into the encoder.
   */
  #copyAscii(text: string, at: number): number {
    const bytes = this.#bytes;
    for (let i = 0; i < text.length; i++) {
      const code = text.charCodeAt(i);
      if (code >= 0x80) return encoder.encodeInto(text, bytes.subarray(at)).written;
      bytes[at + i] = code;
    }
    return text.length;
  }

  /** `$<bytes>\r\n<bytes>\r\n`. */
  #bulkBytes(part: Uint8Array): void {
    this.#reserve(part.length + 16);
    const at = this.#header(this.#length, part.length);
    this.#bytes.set(part, at);
    this.#bytes[at + part.length] = 13;
    this.#bytes[at + part.length + 1] = 10;
    this.#length = at + part.length + 2;
  }

  /** Writes `$<length>\r\n` at `at`; returns where the text goes. */
  #header(at: number, length: number): number {
    const bytes = this.#bytes;
    bytes[at++] = 36; // $
    const digits = String(length);
    for (let i = 0; i < digits.length; i++) bytes[at++] = digits.charCodeAt(i);
    bytes[at++] = 13;
    bytes[at++] = 10;
    return at;
  }
}

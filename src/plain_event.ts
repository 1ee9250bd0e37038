/**
 * Reads the common datagram straight from its bytes: no text decoding, no `JSON.parse`, no
 * object per event. It gives what a sink writes (the id, type, `ts`, source, and the validated
 * payload as the JSON text `JSON.stringify` makes of it) for the datagram as the patched ckpool
 * sends it, and answers "not plain" for anything else, which then takes the full decode
 * (`datagram.ts`). On every datagram it accepts the two agree, byte for byte; tests hold them
 * to it.
 *
 * Plain means:
 * - ASCII only, no whitespace between tokens, and no escape (`\`) in any string;
 * - a known type other than `block_found` (whose announcement carries the whole event);
 * - the envelope's keys only (`event`, `ts`, `source`, `seq`, `emitter`, `data`), each once;
 * - `data`, if present, an object of at most {@link MAX_MEMBERS} members whose values are
 *   strings, numbers, `true` or `false`, with each key once, none named `__proto__` and none
 *   starting with a digit (JavaScript orders such keys first);
 * - every value within its contract field's kind, and every number finite.
 *
 * @module
 */
import contract from "../contract/events.json" with { type: "json" };
import { contentId } from "./event_identity.ts";
import {
  BLOCK_HASH,
  EMITTER,
  EVENT_FIELDS,
  EVENT_SOURCES,
  type FieldKind,
  type KnownEventType,
  MAX_TEXT,
  MAX_TS,
  MIN_HEIGHT,
} from "./events.ts";

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const COLON = 0x3a;
const OPEN = 0x7b;
const CLOSE = 0x7d;
const MINUS = 0x2d;
const PLUS = 0x2b;
const DOT = 0x2e;
const ZERO = 0x30;
const NINE = 0x39;

/** Most payload members a plain datagram may have; more is rare enough for the full decode. */
const MAX_MEMBERS = 32;
/** Integers of at most this many digits are exact doubles, written back digit for digit. */
const EXACT_DIGITS = 15;

const utf8 = new TextEncoder();

// How a payload value was written.
const STRING_TOKEN = 0;
const NUMBER_TOKEN = 1;
const LITERAL_TOKEN = 2; // true or false

/** A contract field as the scanner writes it. */
interface Field {
  /** Its name. */
  readonly bytes: Uint8Array;
  readonly kind: FieldKind;
  /** `"name":`, preceded by `{` for the first field and `,` for the others. */
  readonly head: Uint8Array;
  /** The JSON of the value a missing field gets, or undefined when the field is required. */
  readonly fallback: Uint8Array | undefined;
}

/** A type a plain datagram may be. */
interface PlainType {
  readonly name: string;
  readonly bytes: Uint8Array;
  /** Its fields in contract order; never none. */
  readonly fields: readonly Field[];
}

/** The JSON of the value a missing field of a type gets, or undefined when it is required. */
function defaultOf(type: object): Uint8Array | undefined {
  return "default" in type ? utf8.encode(JSON.stringify(type.default)) : undefined;
}

const PLAIN_TYPES: readonly PlainType[] = (Object.keys(EVENT_FIELDS) as KnownEventType[])
  .filter((type) => type !== "block_found" && Object.keys(EVENT_FIELDS[type]).length > 0)
  .map((type) => ({
    name: type,
    bytes: utf8.encode(type),
    fields: Object.entries(EVENT_FIELDS[type]).map(([name, kind], i) => ({
      bytes: utf8.encode(name),
      kind,
      head: utf8.encode(`${i === 0 ? "{" : ","}${JSON.stringify(name)}:`),
      fallback: defaultOf(contract.types[kind]),
    })),
  }));

const SOURCES = EVENT_SOURCES.map((source) => ({ name: source, bytes: utf8.encode(source) }));

const ENVELOPE_KEYS = ["event", "ts", "source", "seq", "emitter", "data"].map((key) =>
  utf8.encode(key)
);
/** The envelope's keys differ in length: each length names the one key it can be. */
const ENVELOPE_KEY_OF_LENGTH = new Int8Array(8).fill(-1);
ENVELOPE_KEYS.forEach((key, i) => ENVELOPE_KEY_OF_LENGTH[key.length] = i);
const KEY_EVENT = 0;
const KEY_TS = 1;
const KEY_SOURCE = 2;
const KEY_SEQ = 3;
// 4 is `emitter`, the string that is neither `event` nor `source`.
const KEY_DATA = 5;

const PROTO = utf8.encode("__proto__");
const TRUE = utf8.encode("true");
const FALSE = utf8.encode("false");

/** The text of ASCII bytes `from` to `to`. */
function ascii(bytes: Uint8Array, from: number, to: number): string {
  return String.fromCharCode.apply(null, bytes.subarray(from, to) as unknown as number[]);
}

/** Whether `bytes[from, to)` hold exactly `word`. */
function holds(bytes: Uint8Array, from: number, to: number, word: Uint8Array): boolean {
  if (to - from !== word.length) return false;
  for (let i = 0; i < word.length; i++) if (bytes[from + i] !== word[i]) return false;
  return true;
}

function isDigit(byte: number): boolean {
  return byte >= ZERO && byte <= NINE;
}

/**
 * The index of the entry whose `bytes` are `bytes[from, to)`, or -1. The entry at `guess` is
 * tried first: an emitter sends a payload's fields in contract order.
 */
function indexNamed(
  list: readonly { readonly bytes: Uint8Array }[],
  bytes: Uint8Array,
  from: number,
  to: number,
  guess = 0,
): number {
  if (guess < list.length && holds(bytes, from, to, list[guess].bytes)) return guess;
  for (let i = 0; i < list.length; i++) if (holds(bytes, from, to, list[i].bytes)) return i;
  return -1;
}

/**
 * Where the string that opens at `at` ends (after its closing quote), or -1 unless it is
 * plain: printable ASCII, no escape.
 */
function stringEnd(bytes: Uint8Array, at: number): number {
  if (bytes[at] !== QUOTE) return -1;
  for (let i = at + 1; i < bytes.length; i++) {
    const byte = bytes[i];
    if (byte === QUOTE) return i + 1;
    if (byte < 0x20 || byte >= 0x80 || byte === BACKSLASH) return -1;
  }
  return -1;
}

/** A JSON number as the scanner read it. */
class NumberToken {
  /** Where it ends, or -1 when no number starts where it was read. */
  end = -1;
  value = 0;
  /**
   * Where the text `String(value)` writes ends, when that text is the token's own up to
   * there; else -1. So it is for a number without sign or exponent that has at most 15
   * significant digits, the most a double keeps exactly: an integer, written with a fraction
   * of zeros or none, and a fraction that ends in a digit other than 0, above 0.000001 (below
   * it JavaScript writes an exponent).
   */
  exactTo = -1;

  /** Reads the number that starts at `at`. */
  read(bytes: Uint8Array, at: number): void {
    this.end = -1;
    let i = at;
    const negative = bytes[i] === MINUS;
    if (negative) i++;
    const integerFrom = i;
    if (bytes[i] === ZERO) i++;
    else if (isDigit(bytes[i])) { while (isDigit(bytes[i])) i++; }
    else return;
    const integerTo = i;
    let fractionTo = i;
    /** Where the fraction's last digit other than 0 is, or -1. */
    let lastNonZero = -1;
    let firstNonZero = -1;
    if (bytes[i] === DOT) {
      if (!isDigit(bytes[++i])) return;
      for (; isDigit(bytes[i]); i++) {
        if (bytes[i] === ZERO) continue;
        if (firstNonZero < 0) firstNonZero = i;
        lastNonZero = i;
      }
      fractionTo = i;
    }
    let exponent = false;
    if (bytes[i] === 0x65 || bytes[i] === 0x45) {
      exponent = true;
      i++;
      if (bytes[i] === PLUS || bytes[i] === MINUS) i++;
      if (!isDigit(bytes[i])) return;
      while (isDigit(bytes[i])) i++;
    }
    this.end = i;
    this.exactTo = -1;
    const integerDigits = integerTo - integerFrom;
    if (!negative && !exponent && lastNonZero < 0 && integerDigits <= EXACT_DIGITS) {
      let value = 0;
      for (let j = integerFrom; j < integerTo; j++) value = value * 10 + bytes[j] - ZERO;
      this.value = value;
      this.exactTo = integerTo;
      return;
    }
    this.value = Number(ascii(bytes, at, i));
    if (negative || exponent || lastNonZero !== fractionTo - 1) return;
    const zeroInteger = bytes[integerFrom] === ZERO;
    const significant = zeroInteger
      ? lastNonZero - firstNonZero + 1
      : integerDigits + fractionTo - integerTo - 1;
    const leadingZeros = firstNonZero - integerTo - 1;
    if (significant <= EXACT_DIGITS && (!zeroInteger || leadingZeros <= 5)) this.exactTo = i;
  }
}

/**
 * Reads plain datagrams (see the module). One scanner is reused for every datagram: what
 * {@link scan} found stays valid until the next call.
 */
export class PlainEventScanner {
  /** The event's type. */
  type = "";
  /** `ts` as `String(ts)` writes it. */
  ts = "";
  source = "";
  /** Room for the longest id: 32 hex digits, a colon and 16 digits, or `sha256:` and 32. */
  readonly #id = new Uint8Array(64);
  #idLength = 0;
  #payload = new Uint8Array(1024);
  #payloadLength = 0;
  readonly #number = new NumberToken();
  // The payload's members as found: where each key and value is, how the value was written.
  readonly #keyFrom = new Int32Array(MAX_MEMBERS);
  readonly #keyTo = new Int32Array(MAX_MEMBERS);
  readonly #valueFrom = new Int32Array(MAX_MEMBERS);
  readonly #valueTo = new Int32Array(MAX_MEMBERS);
  readonly #token = new Uint8Array(MAX_MEMBERS);
  readonly #value = new Float64Array(MAX_MEMBERS);
  /** For a number whose text is exact, where that text ends; else -1. */
  readonly #exactTo = new Int32Array(MAX_MEMBERS);
  #members = 0;
  /** For each contract field of the type, the member that holds it, or -1. */
  readonly #fieldMember = new Int32Array(MAX_MEMBERS);
  /** Which members are contract fields. */
  readonly #isField = new Uint8Array(MAX_MEMBERS);

  /** The last emitter id that passed `EMITTER`: one emitter sends most datagrams. */
  #emitter: Uint8Array | undefined;

  /** The event's identity (`event_identity.ts`) as UTF-8; valid until the next scan. */
  id(): Uint8Array {
    return this.#id.subarray(0, this.#idLength);
  }

  /** The payload as `JSON.stringify` writes the validated `data`; valid until the next scan. */
  payload(): Uint8Array {
    return this.#payload.subarray(0, this.#payloadLength);
  }

  /** Reads `bytes`; false unless they are a plain datagram, and then nothing else holds. */
  scan(bytes: Uint8Array): boolean {
    const end = bytes.length - 1;
    if (end < 1 || bytes[0] !== OPEN || bytes[end] !== CLOSE) return false;
    const number = this.#number;
    let type: PlainType | undefined;
    let source: string | undefined;
    let ts = 0; // until read: a ts is above 0
    let tsText = "";
    let seqFrom = -1;
    let seqTo = -1;
    let seqText = "";
    let emitterFrom = -1;
    let emitterTo = -1;
    let seen = 0;
    this.#members = 0;
    let at = 1;
    for (;;) {
      const keyEnd = stringEnd(bytes, at);
      if (keyEnd < 0 || bytes[keyEnd] !== COLON) return false;
      const length = keyEnd - at - 2;
      const key = length < ENVELOPE_KEY_OF_LENGTH.length ? ENVELOPE_KEY_OF_LENGTH[length] : -1;
      if (key < 0 || !holds(bytes, at + 1, keyEnd - 1, ENVELOPE_KEYS[key])) return false;
      if ((seen & (1 << key)) !== 0) return false;
      seen |= 1 << key;
      const from = keyEnd + 1;
      let to: number;
      if (key === KEY_TS || key === KEY_SEQ) {
        number.read(bytes, from);
        to = number.end;
        if (to < 0) return false;
        const value = number.value;
        if (key === KEY_TS) {
          if (!(value > 0 && value <= MAX_TS)) return false;
          ts = value;
          tsText = number.exactTo >= 0 ? ascii(bytes, from, number.exactTo) : String(value);
        } else {
          if (!(Number.isSafeInteger(value) && value >= 0)) return false;
          seqFrom = from;
          seqTo = number.exactTo;
          seqText = number.exactTo >= 0 ? "" : String(value);
        }
      } else if (key === KEY_DATA) {
        to = this.#scanPayload(bytes, from);
        if (to < 0) return false;
      } else {
        to = stringEnd(bytes, from);
        if (to < 0) return false;
        if (key === KEY_EVENT) {
          type = PLAIN_TYPES[indexNamed(PLAIN_TYPES, bytes, from + 1, to - 1)];
          if (type === undefined) return false;
        } else if (key === KEY_SOURCE) {
          source = SOURCES[indexNamed(SOURCES, bytes, from + 1, to - 1)]?.name;
          if (source === undefined) return false;
        } else {
          if (!this.#isEmitter(bytes, from + 1, to - 1)) return false;
          emitterFrom = from + 1;
          emitterTo = to - 1;
        }
      }
      if (bytes[to] === COMMA) at = to + 1;
      else if (to === end) break;
      else return false;
    }
    if (type === undefined || source === undefined || ts === 0) return false;
    if (!this.#writePayload(bytes, type.fields)) return false;
    this.type = type.name;
    this.source = source;
    this.ts = tsText;
    if (emitterFrom >= 0 && seqFrom >= 0) {
      this.#idLength = 0;
      this.#appendId(bytes, emitterFrom, emitterTo);
      this.#id[this.#idLength++] = COLON;
      if (seqText === "") this.#appendId(bytes, seqFrom, seqTo);
      else this.#appendId(utf8.encode(seqText), 0, seqText.length);
    } else {
      const id = utf8.encode(contentId(bytes));
      this.#id.set(id);
      this.#idLength = id.length;
    }
    return true;
  }

  /** Whether `bytes[from, to)` is an emitter id (`EMITTER`, the contract's pattern). */
  #isEmitter(bytes: Uint8Array, from: number, to: number): boolean {
    if (this.#emitter !== undefined && holds(bytes, from, to, this.#emitter)) return true;
    if (!EMITTER.test(ascii(bytes, from, to))) return false;
    this.#emitter = bytes.slice(from, to);
    return true;
  }

  /** Appends `bytes[from, to)` to the id. */
  #appendId(bytes: Uint8Array, from: number, to: number): void {
    for (let i = from; i < to; i++) this.#id[this.#idLength++] = bytes[i];
  }

  /** Finds the members of the payload object at `at`; returns where it ends, or -1. */
  #scanPayload(bytes: Uint8Array, at: number): number {
    if (bytes[at] !== OPEN) return -1;
    if (bytes[at + 1] === CLOSE) return at + 2;
    let i = at + 1;
    for (;;) {
      const member = this.#members;
      if (member === MAX_MEMBERS) return -1;
      const keyEnd = stringEnd(bytes, i);
      if (keyEnd < 0 || bytes[keyEnd] !== COLON) return -1;
      this.#keyFrom[member] = i + 1;
      this.#keyTo[member] = keyEnd - 1;
      const from = keyEnd + 1;
      let to: number;
      const first = bytes[from];
      if (first === QUOTE) {
        to = stringEnd(bytes, from);
        this.#token[member] = STRING_TOKEN;
      } else if (holds(bytes, from, from + 4, TRUE)) {
        to = from + 4;
        this.#token[member] = LITERAL_TOKEN;
      } else if (holds(bytes, from, from + 5, FALSE)) {
        to = from + 5;
        this.#token[member] = LITERAL_TOKEN;
      } else {
        const number = this.#number;
        number.read(bytes, from);
        to = number.end;
        if (to >= 0 && !Number.isFinite(number.value)) return -1;
        this.#value[member] = number.value;
        this.#exactTo[member] = number.exactTo;
        this.#token[member] = NUMBER_TOKEN;
      }
      if (to < 0) return -1;
      this.#valueFrom[member] = from;
      this.#valueTo[member] = to;
      this.#members++;
      if (bytes[to] === CLOSE) return to + 1;
      if (bytes[to] !== COMMA) return -1;
      i = to + 1;
    }
  }

  /**
   * Matches the members to the type's fields, checks each, and writes the payload: the
   * fields in contract order (a missing one with its default), then the other members in the
   * order sent. False if a member is not plain.
   */
  #writePayload(bytes: Uint8Array, fields: readonly Field[]): boolean {
    const members = this.#members;
    this.#fieldMember.fill(-1, 0, fields.length);
    this.#isField.fill(0, 0, members);
    for (let member = 0; member < members; member++) {
      const keyFrom = this.#keyFrom[member];
      const keyTo = this.#keyTo[member];
      const field = indexNamed(fields, bytes, keyFrom, keyTo, member);
      if (field >= 0) {
        if (this.#fieldMember[field] >= 0) return false;
        if (!this.#fits(bytes, member, fields[field].kind)) return false;
        this.#fieldMember[field] = member;
        this.#isField[member] = 1;
      } else if (!this.#isFreshKey(bytes, member)) return false;
    }
    this.#payloadLength = 0;
    for (let field = 0; field < fields.length; field++) {
      const { head, fallback } = fields[field];
      this.#put(head, 0, head.length);
      const member = this.#fieldMember[field];
      if (member >= 0) this.#putValue(bytes, member);
      else if (fallback !== undefined) this.#put(fallback, 0, fallback.length);
      else return false;
    }
    for (let member = 0; member < members; member++) {
      if (this.#isField[member] === 1) continue;
      this.#reserve(1);
      this.#payload[this.#payloadLength++] = COMMA;
      // The key with its quotes, and the colon after it.
      this.#put(bytes, this.#keyFrom[member] - 1, this.#keyTo[member] + 2);
      this.#putValue(bytes, member);
    }
    this.#reserve(1);
    this.#payload[this.#payloadLength++] = CLOSE;
    return true;
  }

  /** Whether a member that is no contract field has a key JavaScript keeps in place, once. */
  #isFreshKey(bytes: Uint8Array, member: number): boolean {
    const keyFrom = this.#keyFrom[member];
    const keyTo = this.#keyTo[member];
    if (keyTo === keyFrom || isDigit(bytes[keyFrom]) || holds(bytes, keyFrom, keyTo, PROTO)) {
      return false;
    }
    for (let earlier = 0; earlier < member; earlier++) {
      const from = this.#keyFrom[earlier];
      if (holds(bytes, keyFrom, keyTo, bytes.subarray(from, this.#keyTo[earlier]))) return false;
    }
    return true;
  }

  /** Whether a member holds a value of `kind` that the full decode keeps as it is. */
  #fits(bytes: Uint8Array, member: number, kind: FieldKind): boolean {
    const token = this.#token[member];
    const value = this.#value[member];
    switch (kind) {
      case "text":
        return token === STRING_TOKEN &&
          this.#valueTo[member] - this.#valueFrom[member] - 2 <= MAX_TEXT;
      case "nonNegative":
        return token === NUMBER_TOKEN && value >= 0;
      case "count":
        return token === NUMBER_TOKEN && Number.isSafeInteger(value) && value >= 0;
      case "flag":
        return token === LITERAL_TOKEN;
      case "positiveCount":
        return token === NUMBER_TOKEN && Number.isSafeInteger(value) && value >= MIN_HEIGHT;
      case "blockHash":
        return token === STRING_TOKEN &&
          BLOCK_HASH.test(ascii(bytes, this.#valueFrom[member] + 1, this.#valueTo[member] - 1));
    }
  }

  /** A member's value as `JSON.stringify` writes it. */
  #putValue(bytes: Uint8Array, member: number): void {
    const from = this.#valueFrom[member];
    if (this.#token[member] !== NUMBER_TOKEN) {
      this.#put(bytes, from, this.#valueTo[member]);
    } else if (this.#exactTo[member] >= 0) {
      this.#put(bytes, from, this.#exactTo[member]);
    } else {
      const text = String(this.#value[member]);
      this.#reserve(text.length);
      for (let i = 0; i < text.length; i++) {
        this.#payload[this.#payloadLength++] = text.charCodeAt(i);
      }
    }
  }

  /** Appends `bytes[from, to)`; values are short, so a loop costs less than a view. */
  #put(bytes: Uint8Array, from: number, to: number): void {
    this.#reserve(to - from);
    const payload = this.#payload;
    let length = this.#payloadLength;
    for (let i = from; i < to; i++) payload[length++] = bytes[i];
    this.#payloadLength = length;
  }

  #reserve(bytes: number): void {
    if (this.#payloadLength + bytes <= this.#payload.length) return;
    const grown = new Uint8Array(Math.max(this.#payload.length * 2, this.#payloadLength + bytes));
    grown.set(this.#payload.subarray(0, this.#payloadLength));
    this.#payload = grown;
  }
}

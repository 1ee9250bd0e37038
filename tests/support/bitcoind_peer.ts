/**
 * A bitcoind JSON-RPC peer for tests: bitcoind (v27, signet) cannot be installed here, so this
 * module answers the calls ckpool makes the way bitcoind does, over real HTTP with basic auth,
 * on a small chain it keeps in memory.
 *
 * What it models, following Bitcoin Core v27 (`src/httprpc.cpp`, `src/rpc/*.cpp`,
 * `src/validation.cpp`):
 * - HTTP: POST only (405 otherwise), 401 with `WWW-Authenticate: Basic realm="jsonrpc"` (after
 *   bitcoind's 250 ms brute-force delay) without valid credentials, keep-alive, and bare-LF
 *   request lines as ckpool sends them.
 * - JSON-RPC 1.0 replies `{"result":..,"error":..,"id":..}`; an error gives HTTP 500, except
 *   -32600 (400) and -32601 "Method not found" (404), exactly as bitcoind v27 does. Batches
 *   (arrays) answer 200 with one reply per call.
 * - A signet chain (genesis is signet's), whose blocks after genesis carry `bits` (default the
 *   regtest-like 0x207fffff). The signet challenge defaults to OP_TRUE (`51`), i.e. a custom
 *   signet anyone can mine, which is the only kind ckpool can mine on.
 * - `getblocktemplate` refuses requests without the `signet` rule, then without `segwit`, with
 *   Core's errors; templates carry every field Core's do, including `default_witness_commitment`
 *   and `signet_challenge`.
 * - `submitblock` runs Core's checks in Core's order and answers with Core's BIP22 strings:
 *   `high-hash`, `bad-signet-blksig`, `bad-txnmrklroot`, `bad-txns-duplicate`, `bad-cb-missing`,
 *   `prev-blk-not-found`, `bad-diffbits`, `time-too-old`, `time-too-new`, `bad-version(0x..)`,
 *   `bad-cb-height`, `bad-witness-nonce-size`, `bad-witness-merkle-match`, `unexpected-witness`,
 *   `bad-cb-amount`, `duplicate`, `duplicate-invalid`, `inconclusive` (valid but not on the best
 *   chain), or null when the block becomes the tip.
 *
 * Deliberate limits: no script interpreter, so only the OP_TRUE signet challenge can be met
 * (any other challenge rejects every block with `bad-signet-blksig`); transactions are only
 * those a test puts in the mempool (`addMempoolTransaction`, `sendrawtransaction`), taken on
 * trust (inputs and signatures are not checked), and a block holding any other transaction is
 * refused with `bad-txns-inputs-missingorspent`; no JSON-RPC 2.0 (bitcoind v28+).
 *
 * @module
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { Transaction } from "bitcoinjs-lib";

// ---------------------------------------------------------------------------------------------
// Bytes
// ---------------------------------------------------------------------------------------------

/** Lower-case hex of `bytes`. */
export function toHex(bytes: Uint8Array): string {
  let out = "";
  for (const byte of bytes) out += byte.toString(16).padStart(2, "0");
  return out;
}

/** Bytes of an even-length hex string; throws on anything else. */
export function fromHex(hex: string): Uint8Array {
  if (hex.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(hex)) {
    throw new Error(`not a hex string: ${hex.slice(0, 40)}`);
  }
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** A reversed copy: internal byte order <-> the hex order bitcoind displays hashes in. */
export function reversed(bytes: Uint8Array): Uint8Array {
  return Uint8Array.from(bytes).reverse();
}

/** Concatenates byte arrays. */
export function concatBytes(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}

/** SHA-256. */
export function sha256(data: Uint8Array): Uint8Array {
  return new Uint8Array(createHash("sha256").update(data).digest());
}

/** Double SHA-256, as Bitcoin hashes headers, transactions and merkle nodes. */
export function sha256d(data: Uint8Array): Uint8Array {
  return sha256(sha256(data));
}

/** A 32-byte little-endian (internal order) hash as an unsigned integer. */
export function hashToBigInt(hashLE: Uint8Array): bigint {
  return BigInt("0x" + (toHex(reversed(hashLE)) || "0"));
}

function u32le(value: number): Uint8Array {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, value >>> 0, true);
  return out;
}

function u64le(value: bigint): Uint8Array {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt.asUintN(64, value), true);
  return out;
}

/** Bitcoin's CompactSize encoding. */
export function varint(n: number): Uint8Array {
  if (n < 0xfd) return Uint8Array.of(n);
  if (n <= 0xffff) return Uint8Array.of(0xfd, n & 0xff, n >> 8);
  if (n <= 0xffffffff) return concatBytes(Uint8Array.of(0xfe), u32le(n));
  return concatBytes(Uint8Array.of(0xff), u64le(BigInt(n)));
}

class Reader {
  offset = 0;
  constructor(readonly bytes: Uint8Array) {}
  take(n: number): Uint8Array {
    if (this.offset + n > this.bytes.length) throw new Error("read past end");
    const out = this.bytes.subarray(this.offset, this.offset + n);
    this.offset += n;
    return out;
  }
  u8(): number {
    return this.take(1)[0];
  }
  u32(): number {
    const b = this.take(4);
    return new DataView(b.buffer, b.byteOffset, 4).getUint32(0, true);
  }
  varint(): number {
    const first = this.u8();
    if (first < 0xfd) return first;
    if (first === 0xfd) {
      const b = this.take(2);
      return b[0] | (b[1] << 8);
    }
    if (first === 0xfe) return this.u32();
    const b = this.take(8);
    const value = new DataView(b.buffer, b.byteOffset, 8).getBigUint64(0, true);
    if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error("size too large");
    return Number(value);
  }
  get done(): boolean {
    return this.offset === this.bytes.length;
  }
}

// ---------------------------------------------------------------------------------------------
// Script
// ---------------------------------------------------------------------------------------------

const OP_NAMES: Record<number, string> = {
  0x4f: "-1",
  0x50: "OP_RESERVED",
  0x61: "OP_NOP",
  0x62: "OP_VER",
  0x63: "OP_IF",
  0x64: "OP_NOTIF",
  0x65: "OP_VERIF",
  0x66: "OP_VERNOTIF",
  0x67: "OP_ELSE",
  0x68: "OP_ENDIF",
  0x69: "OP_VERIFY",
  0x6a: "OP_RETURN",
  0x6b: "OP_TOALTSTACK",
  0x6c: "OP_FROMALTSTACK",
  0x6d: "OP_2DROP",
  0x6e: "OP_2DUP",
  0x6f: "OP_3DUP",
  0x70: "OP_2OVER",
  0x71: "OP_2ROT",
  0x72: "OP_2SWAP",
  0x73: "OP_IFDUP",
  0x74: "OP_DEPTH",
  0x75: "OP_DROP",
  0x76: "OP_DUP",
  0x77: "OP_NIP",
  0x78: "OP_OVER",
  0x79: "OP_PICK",
  0x7a: "OP_ROLL",
  0x7b: "OP_ROT",
  0x7c: "OP_SWAP",
  0x7d: "OP_TUCK",
  0x7e: "OP_CAT",
  0x7f: "OP_SUBSTR",
  0x80: "OP_LEFT",
  0x81: "OP_RIGHT",
  0x82: "OP_SIZE",
  0x83: "OP_INVERT",
  0x84: "OP_AND",
  0x85: "OP_OR",
  0x86: "OP_XOR",
  0x87: "OP_EQUAL",
  0x88: "OP_EQUALVERIFY",
  0x89: "OP_RESERVED1",
  0x8a: "OP_RESERVED2",
  0x8b: "OP_1ADD",
  0x8c: "OP_1SUB",
  0x8d: "OP_2MUL",
  0x8e: "OP_2DIV",
  0x8f: "OP_NEGATE",
  0x90: "OP_ABS",
  0x91: "OP_NOT",
  0x92: "OP_0NOTEQUAL",
  0x93: "OP_ADD",
  0x94: "OP_SUB",
  0x95: "OP_MUL",
  0x96: "OP_DIV",
  0x97: "OP_MOD",
  0x98: "OP_LSHIFT",
  0x99: "OP_RSHIFT",
  0x9a: "OP_BOOLAND",
  0x9b: "OP_BOOLOR",
  0x9c: "OP_NUMEQUAL",
  0x9d: "OP_NUMEQUALVERIFY",
  0x9e: "OP_NUMNOTEQUAL",
  0x9f: "OP_LESSTHAN",
  0xa0: "OP_GREATERTHAN",
  0xa1: "OP_LESSTHANOREQUAL",
  0xa2: "OP_GREATERTHANOREQUAL",
  0xa3: "OP_MIN",
  0xa4: "OP_MAX",
  0xa5: "OP_WITHIN",
  0xa6: "OP_RIPEMD160",
  0xa7: "OP_SHA1",
  0xa8: "OP_SHA256",
  0xa9: "OP_HASH160",
  0xaa: "OP_HASH256",
  0xab: "OP_CODESEPARATOR",
  0xac: "OP_CHECKSIG",
  0xad: "OP_CHECKSIGVERIFY",
  0xae: "OP_CHECKMULTISIG",
  0xaf: "OP_CHECKMULTISIGVERIFY",
  0xb0: "OP_NOP1",
  0xb1: "OP_CHECKLOCKTIMEVERIFY",
  0xb2: "OP_CHECKSEQUENCEVERIFY",
  0xb3: "OP_NOP4",
  0xb4: "OP_NOP5",
  0xb5: "OP_NOP6",
  0xb6: "OP_NOP7",
  0xb7: "OP_NOP8",
  0xb8: "OP_NOP9",
  0xb9: "OP_NOP10",
  0xba: "OP_CHECKSIGADD",
};

/** One script operation: an opcode and, for pushes, the data pushed. */
export interface ScriptOp {
  opcode: number;
  data?: Uint8Array;
}

/** Splits a script into operations; `undefined` when a push runs past the end. */
export function parseScript(script: Uint8Array): { ops: ScriptOp[]; complete: boolean } {
  const ops: ScriptOp[] = [];
  let i = 0;
  while (i < script.length) {
    const opcode = script[i++];
    if (opcode <= 0x4e) {
      let size = opcode;
      let sizeBytes = 0;
      if (opcode === 0x4c) sizeBytes = 1;
      else if (opcode === 0x4d) sizeBytes = 2;
      else if (opcode === 0x4e) sizeBytes = 4;
      if (sizeBytes) {
        if (i + sizeBytes > script.length) return { ops, complete: false };
        size = 0;
        for (let k = sizeBytes - 1; k >= 0; k--) size = size * 256 + script[i + k];
        i += sizeBytes;
      }
      if (i + size > script.length) return { ops, complete: false };
      ops.push({ opcode, data: script.subarray(i, i + size) });
      i += size;
    } else {
      ops.push({ opcode });
    }
  }
  return { ops, complete: true };
}

/** Core's CScriptNum decoding of at most 4 bytes (little-endian sign-magnitude). */
function scriptNumValue(data: Uint8Array): number {
  if (data.length === 0) return 0;
  let result = 0;
  for (let i = 0; i < data.length; i++) result += data[i] * 2 ** (8 * i);
  const last = data[data.length - 1];
  if (last & 0x80) return -(result - 0x80 * 2 ** (8 * (data.length - 1)));
  return result;
}

/** Core's `CScript() << n`: OP_0, OP_1..OP_16, OP_1NEGATE, or a minimal CScriptNum push. */
export function scriptPushInt(n: number): Uint8Array {
  if (n === 0) return Uint8Array.of(0x00);
  if (n === -1 || (n >= 1 && n <= 16)) return Uint8Array.of(n === -1 ? 0x4f : 0x50 + n);
  const bytes: number[] = [];
  const negative = n < 0;
  let abs = Math.abs(n);
  while (abs > 0) {
    bytes.push(abs & 0xff);
    abs = Math.floor(abs / 256);
  }
  if (bytes[bytes.length - 1] & 0x80) bytes.push(negative ? 0x80 : 0x00);
  else if (negative) bytes[bytes.length - 1] |= 0x80;
  return Uint8Array.of(bytes.length, ...bytes);
}

/** A minimal data push (direct length byte or OP_PUSHDATA1/2). */
export function scriptPushData(data: Uint8Array): Uint8Array {
  if (data.length < 0x4c) return concatBytes(Uint8Array.of(data.length), data);
  if (data.length <= 0xff) return concatBytes(Uint8Array.of(0x4c, data.length), data);
  return concatBytes(Uint8Array.of(0x4d, data.length & 0xff, data.length >> 8), data);
}

const SIGHASH_NAMES: Record<number, string> = {
  0x01: "ALL",
  0x81: "ALL|ANYONECANPAY",
  0x02: "NONE",
  0x82: "NONE|ANYONECANPAY",
  0x03: "SINGLE",
  0x83: "SINGLE|ANYONECANPAY",
};

/** Core's IsValidSignatureEncoding (strict DER plus a hash-type byte). */
function isDerSignature(sig: Uint8Array): boolean {
  if (sig.length < 9 || sig.length > 73) return false;
  if (sig[0] !== 0x30 || sig[1] !== sig.length - 3) return false;
  const lenR = sig[3];
  if (5 + lenR >= sig.length) return false;
  const lenS = sig[5 + lenR];
  if (lenR + lenS + 7 !== sig.length) return false;
  if (sig[2] !== 0x02 || lenR === 0 || sig[4] & 0x80) return false;
  if (lenR > 1 && sig[4] === 0x00 && !(sig[5] & 0x80)) return false;
  if (sig[lenR + 4] !== 0x02 || lenS === 0 || sig[lenR + 6] & 0x80) return false;
  if (lenS > 1 && sig[lenR + 6] === 0x00 && !(sig[lenR + 7] & 0x80)) return false;
  return true;
}

/** Core's ScriptToAsmStr. */
export function scriptToAsm(script: Uint8Array, attemptSighashDecode = false): string {
  const { ops, complete } = parseScript(script);
  const unspendable = script.length > 0 && script[0] === 0x6a;
  const parts: string[] = [];
  for (const op of ops) {
    if (op.data !== undefined) {
      if (op.data.length <= 4) {
        parts.push(String(scriptNumValue(op.data)));
      } else if (attemptSighashDecode && !unspendable && isDerSignature(op.data)) {
        const name = SIGHASH_NAMES[op.data[op.data.length - 1]];
        parts.push(name ? `${toHex(op.data.subarray(0, -1))}[${name}]` : toHex(op.data));
      } else {
        parts.push(toHex(op.data));
      }
    } else if (op.opcode >= 0x51 && op.opcode <= 0x60) {
      parts.push(String(op.opcode - 0x50));
    } else {
      parts.push(OP_NAMES[op.opcode] ?? "OP_UNKNOWN");
    }
  }
  if (!complete) parts.push("[error]");
  return parts.join(" ");
}

// ---------------------------------------------------------------------------------------------
// Addresses (signet: bech32 hrp "tb", base58 prefixes 111 / 196)
// ---------------------------------------------------------------------------------------------

const BECH32_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l";
const BECH32_CONST = 1;
const BECH32M_CONST = 0x2bc830a3;
const SIGNET_HRP = "tb";
const PUBKEY_PREFIX = 111;
const SCRIPT_PREFIX = 196;

function bech32Polymod(values: number[]): number {
  return bech32PolymodFrom(1, values);
}

function bech32PolymodFrom(start: number, values: number[]): number {
  const gen = [0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3];
  let chk = start;
  for (const value of values) {
    const top = chk >>> 25;
    chk = (((chk & 0x1ffffff) << 5) ^ value) >>> 0;
    for (let i = 0; i < 5; i++) if ((top >>> i) & 1) chk = (chk ^ gen[i]) >>> 0;
  }
  return chk;
}

function hrpExpand(hrp: string): number[] {
  const out: number[] = [];
  for (const ch of hrp) out.push(ch.charCodeAt(0) >> 5);
  out.push(0);
  for (const ch of hrp) out.push(ch.charCodeAt(0) & 31);
  return out;
}

function convertBits(data: ArrayLike<number>, from: number, to: number, pad: boolean) {
  let acc = 0;
  let bits = 0;
  const out: number[] = [];
  const maxv = (1 << to) - 1;
  for (let i = 0; i < data.length; i++) {
    acc = (acc << from) | data[i];
    bits += from;
    while (bits >= to) {
      bits -= to;
      out.push((acc >> bits) & maxv);
    }
  }
  if (pad) {
    if (bits > 0) out.push((acc << (to - bits)) & maxv);
  } else if (bits >= from || ((acc << (to - bits)) & maxv)) {
    return undefined;
  }
  return out;
}

/** Encodes a segwit address (bech32 for v0, bech32m for v1+). */
export function encodeSegwitAddress(hrp: string, version: number, program: Uint8Array): string {
  const data = [version, ...convertBits(program, 8, 5, true)!];
  const constant = version === 0 ? BECH32_CONST : BECH32M_CONST;
  const mod = bech32Polymod([...hrpExpand(hrp), ...data, 0, 0, 0, 0, 0, 0]) ^ constant;
  const checksum = Array.from({ length: 6 }, (_, i) => (mod >>> (5 * (5 - i))) & 31);
  return hrp + "1" + [...data, ...checksum].map((v) => BECH32_CHARSET[v]).join("");
}

function bech32CheckCharacters(str: string): number[] {
  const errors: number[] = [];
  let lower = false;
  let upper = false;
  for (let i = 0; i < str.length; i++) {
    const c = str.charCodeAt(i);
    if (c >= 97 && c <= 122) {
      if (upper) errors.push(i);
      else lower = true;
    } else if (c >= 65 && c <= 90) {
      if (lower) errors.push(i);
      else upper = true;
    } else if (c < 33 || c > 126) {
      errors.push(i);
    }
  }
  return errors;
}

type Bech32Encoding = "bech32" | "bech32m";

function bech32Decode(str: string) {
  if (bech32CheckCharacters(str).length > 0 || str.length > 90) return undefined;
  const pos = str.lastIndexOf("1");
  if (pos < 1 || pos + 6 >= str.length) return undefined;
  const values: number[] = [];
  for (const ch of str.slice(pos + 1).toLowerCase()) {
    const v = BECH32_CHARSET.indexOf(ch);
    if (v < 0) return undefined;
    values.push(v);
  }
  const hrp = str.slice(0, pos).toLowerCase();
  const check = bech32Polymod([...hrpExpand(hrp), ...values]);
  const encoding: Bech32Encoding | undefined = check === BECH32_CONST
    ? "bech32"
    : check === BECH32M_CONST
    ? "bech32m"
    : undefined;
  if (!encoding) return undefined;
  return { encoding, hrp, data: values.slice(0, -6) };
}

/** Core's bech32::LocateErrors, with the error positions found by search (at most two). */
function bech32LocateErrors(str: string): [string, number[]] {
  if (str.length > 90) {
    return ["Bech32 string too long", Array.from({ length: str.length - 90 }, (_, i) => 90 + i)];
  }
  const bad = bech32CheckCharacters(str);
  if (bad.length) return ["Invalid character or mixed case", bad];
  const pos = str.lastIndexOf("1");
  if (pos < 0) return ["Missing separator", []];
  if (pos === 0 || pos + 6 >= str.length) return ["Invalid separator position", [pos]];
  const hrp = str.slice(0, pos).toLowerCase();
  const values: number[] = [];
  for (let i = pos + 1; i < str.length; i++) {
    const v = BECH32_CHARSET.indexOf(str[i].toLowerCase());
    if (v < 0) return ["Invalid Base 32 character", [i]];
    values.push(v);
  }
  const prefix = hrpExpand(hrp);
  let best: number[] = [];
  let bestEncoding: Bech32Encoding | undefined;
  for (
    const [encoding, constant] of [["bech32", BECH32_CONST], ["bech32m", BECH32M_CONST]] as const
  ) {
    if (bech32Polymod([...prefix, ...values]) === constant) return ["", []];
    const found = locateUpToTwo(prefix, values, constant);
    if (best.length === 0 || (found.length > 0 && found.length < best.length)) {
      best = found.map((i) => i + pos + 1);
      if (best.length) bestEncoding = encoding;
    }
  }
  const message = bestEncoding === "bech32m"
    ? "Invalid Bech32m checksum"
    : bestEncoding === "bech32"
    ? "Invalid Bech32 checksum"
    : "Invalid checksum";
  return [message, best];
}

/**
 * Positions (at most two) whose change makes the checksum valid. The checksum polynomial is
 * linear over GF(2) apart from its start value, so an error's effect on the residue does not
 * depend on the other symbols: precompute each (position, error) effect, then match.
 */
function locateUpToTwo(prefix: number[], values: number[], constant: number): number[] {
  const syndrome = (bech32Polymod([...prefix, ...values]) ^ constant) >>> 0;
  const step = (chk: number, value: number) => bech32PolymodFrom(chk, [value]);
  const n = values.length;
  const effect = new Map<number, Array<[number, number]>>();
  const effects: Array<[number, number]> = [];
  for (let e = 1; e < 32; e++) {
    let c = step(0, e); // error e at the last position
    for (let p = n - 1; p >= 0; p--) {
      effects.push([p, c]);
      const list = effect.get(c) ?? [];
      list.push([p, e]);
      effect.set(c, list);
      c = step(c, 0);
    }
  }
  for (const [p, c] of effects) if (c === syndrome) return [p];
  let best: number[] = [];
  for (const [p, c] of effects) {
    for (const [q] of effect.get((syndrome ^ c) >>> 0) ?? []) {
      if (q === p) continue;
      const pair = p < q ? [p, q] : [q, p];
      if (!best.length || pair[0] < best[0] || (pair[0] === best[0] && pair[1] < best[1])) {
        best = pair;
      }
    }
  }
  return best;
}

const BASE58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

function base58Decode(str: string): Uint8Array | undefined {
  let value = 0n;
  for (const ch of str) {
    const digit = BASE58_ALPHABET.indexOf(ch);
    if (digit < 0) return undefined;
    value = value * 58n + BigInt(digit);
  }
  let hex = value === 0n ? "" : value.toString(16);
  if (hex.length % 2) hex = "0" + hex;
  let zeros = 0;
  while (zeros < str.length && str[zeros] === "1") zeros++;
  return concatBytes(new Uint8Array(zeros), fromHex(hex));
}

function base58Encode(bytes: Uint8Array): string {
  let value = BigInt("0x" + (toHex(bytes) || "0"));
  let out = "";
  while (value > 0n) {
    out = BASE58_ALPHABET[Number(value % 58n)] + out;
    value /= 58n;
  }
  for (const byte of bytes) {
    if (byte !== 0) break;
    out = "1" + out;
  }
  return out;
}

function base58CheckDecode(str: string): Uint8Array | undefined {
  const raw = base58Decode(str);
  if (!raw || raw.length < 4) return undefined;
  const payload = raw.subarray(0, -4);
  return bytesEqual(sha256d(payload).subarray(0, 4), raw.subarray(-4)) ? payload : undefined;
}

/** What validateaddress reports about a valid address. */
export interface DecodedAddress {
  scriptPubKey: Uint8Array;
  isScript: boolean;
  isWitness: boolean;
  witnessVersion?: number;
  witnessProgram?: Uint8Array;
}

/** Core's DecodeDestination for signet: the destination, or Core's error text and positions. */
export function decodeAddress(
  str: string,
): { ok: true; address: DecodedAddress } | { ok: false; error: string; errorLocations: number[] } {
  const fail = (error: string, errorLocations: number[] = []) =>
    ({ ok: false, error, errorLocations }) as const;
  const isBech32 = str.slice(0, SIGNET_HRP.length).toLowerCase() === SIGNET_HRP;
  if (!isBech32) {
    const data = str.length <= 100 ? base58CheckDecode(str) : undefined;
    if (data && data.length <= 21 + 1) {
      if (data.length === 21 && data[0] === PUBKEY_PREFIX) {
        const hash = data.subarray(1);
        return {
          ok: true,
          address: {
            scriptPubKey: concatBytes(
              Uint8Array.of(0x76, 0xa9, 0x14),
              hash,
              Uint8Array.of(0x88, 0xac),
            ),
            isScript: false,
            isWitness: false,
          },
        };
      }
      if (data.length === 21 && data[0] === SCRIPT_PREFIX) {
        return {
          ok: true,
          address: {
            scriptPubKey: concatBytes(
              Uint8Array.of(0xa9, 0x14),
              data.subarray(1),
              Uint8Array.of(0x87),
            ),
            isScript: true,
            isWitness: false,
          },
        };
      }
      if (data.length >= 1 && (data[0] === PUBKEY_PREFIX || data[0] === SCRIPT_PREFIX)) {
        return fail("Invalid length for Base58 address (P2PKH or P2SH)");
      }
      return fail("Invalid or unsupported Base58-encoded address.");
    }
    if (data) return fail("Invalid or unsupported Base58-encoded address.");
    if (!base58Decode(str) || str.length > 100) {
      return fail("Invalid or unsupported Segwit (Bech32) or Base58 encoding.");
    }
    return fail("Invalid checksum or length of Base58 address (P2PKH or P2SH)");
  }
  const dec = bech32Decode(str);
  if (dec) {
    if (dec.data.length === 0) return fail("Empty Bech32 data section");
    if (dec.hrp !== SIGNET_HRP) {
      return fail(
        `Invalid or unsupported prefix for Segwit (Bech32) address (expected ${SIGNET_HRP}, got ${dec.hrp}).`,
      );
    }
    const version = dec.data[0];
    if (version === 0 && dec.encoding !== "bech32") {
      return fail("Version 0 witness address must use Bech32 checksum");
    }
    if (version !== 0 && dec.encoding !== "bech32m") {
      return fail("Version 1+ witness address must use Bech32m checksum");
    }
    const bytes = convertBits(dec.data.slice(1), 5, 8, false);
    if (!bytes) return fail("Invalid padding in Bech32 data section");
    const unit = bytes.length === 1 ? "byte" : "bytes";
    if (version === 0 && bytes.length !== 20 && bytes.length !== 32) {
      return fail(`Invalid Bech32 v0 address program size (${bytes.length} ${unit}), per BIP141`);
    }
    if (version > 16) return fail("Invalid Bech32 address witness version");
    if (bytes.length < 2 || bytes.length > 40) {
      return fail(`Invalid Bech32 address program size (${bytes.length} ${unit})`);
    }
    const program = Uint8Array.from(bytes);
    return {
      ok: true,
      address: {
        scriptPubKey: concatBytes(
          Uint8Array.of(version === 0 ? 0 : 0x50 + version, program.length),
          program,
        ),
        isScript: version === 0 && program.length === 32,
        isWitness: true,
        witnessVersion: version,
        witnessProgram: program,
      },
    };
  }
  const [error, locations] = bech32LocateErrors(str);
  return fail(error, locations);
}

/** The scriptPubKey a signet address pays to; throws on an invalid address. */
export function addressToScript(address: string): Uint8Array {
  const decoded = decodeAddress(address);
  if (!decoded.ok) throw new Error(`invalid signet address ${address}: ${decoded.error}`);
  return decoded.address.scriptPubKey;
}

/** Core's Solver output type names. */
export type ScriptType =
  | "pubkey"
  | "pubkeyhash"
  | "scripthash"
  | "multisig"
  | "nulldata"
  | "witness_v0_keyhash"
  | "witness_v0_scripthash"
  | "witness_v1_taproot"
  | "witness_unknown"
  | "nonstandard";

function isPubKey(data: Uint8Array | undefined): boolean {
  if (!data) return false;
  if (data.length === 33) return data[0] === 0x02 || data[0] === 0x03;
  if (data.length === 65) return data[0] === 0x04 || data[0] === 0x06 || data[0] === 0x07;
  return false;
}

/** Core's Solver, reduced to the type name and (where there is one) the address. */
export function classifyScript(script: Uint8Array): { type: ScriptType; address?: string } {
  const s = script;
  if (s.length >= 4 && s.length <= 42 && (s[0] === 0 || (s[0] >= 0x51 && s[0] <= 0x60))) {
    if (s[1] + 2 === s.length && s[1] >= 2) {
      const version = s[0] === 0 ? 0 : s[0] - 0x50;
      const program = s.subarray(2);
      const address = encodeSegwitAddress(SIGNET_HRP, version, program);
      if (version === 0 && program.length === 20) return { type: "witness_v0_keyhash", address };
      if (version === 0 && program.length === 32) return { type: "witness_v0_scripthash", address };
      if (version === 0) return { type: "nonstandard" };
      if (version === 1 && program.length === 32) return { type: "witness_v1_taproot", address };
      return { type: "witness_unknown", address };
    }
  }
  if (s.length === 23 && s[0] === 0xa9 && s[1] === 0x14 && s[22] === 0x87) {
    return {
      type: "scripthash",
      address: base58Check(concatBytes(Uint8Array.of(SCRIPT_PREFIX), s.subarray(2, 22))),
    };
  }
  if (
    s.length === 25 && s[0] === 0x76 && s[1] === 0xa9 && s[2] === 0x14 && s[23] === 0x88 &&
    s[24] === 0xac
  ) {
    return {
      type: "pubkeyhash",
      address: base58Check(concatBytes(Uint8Array.of(PUBKEY_PREFIX), s.subarray(3, 23))),
    };
  }
  const { ops, complete } = parseScript(s);
  if (s.length >= 1 && s[0] === 0x6a && complete && ops.slice(1).every((op) => op.opcode <= 0x60)) {
    return { type: "nulldata" };
  }
  if (complete && ops.length === 2 && ops[1].opcode === 0xac && isPubKey(ops[0].data)) {
    return { type: "pubkey" };
  }
  if (
    complete && ops.length >= 4 && ops[ops.length - 1].opcode === 0xae &&
    ops[0].opcode >= 0x51 && ops[0].opcode <= 0x60 &&
    ops[ops.length - 2].opcode >= 0x51 && ops[ops.length - 2].opcode <= 0x60 &&
    ops.slice(1, -2).every((op) => isPubKey(op.data)) &&
    ops[ops.length - 2].opcode - 0x50 === ops.length - 3 &&
    ops[0].opcode <= ops[ops.length - 2].opcode
  ) {
    return { type: "multisig" };
  }
  return { type: "nonstandard" };
}

function base58Check(payload: Uint8Array): string {
  return base58Encode(concatBytes(payload, sha256d(payload).subarray(0, 4)));
}

const DESC_INPUT_CHARSET =
  "0123456789()[],'/*abcdefgh@:$%{}IJKLMNOPQRSTUVWXYZ&+-.;<=>?!^_|~ijklmnopqrstuvwxyzABCDEFGH`#\"\\ ";
const DESC_CHECKSUM_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l";

function descPolymod(c: bigint, val: number): bigint {
  const c0 = c >> 35n;
  c = ((c & 0x7ffffffffn) << 5n) ^ BigInt(val);
  if (c0 & 1n) c ^= 0xf5dee51989n;
  if (c0 & 2n) c ^= 0xa9fdca3312n;
  if (c0 & 4n) c ^= 0x1bab10e32dn;
  if (c0 & 8n) c ^= 0x3706b1677an;
  if (c0 & 16n) c ^= 0x644d626ffdn;
  return c;
}

/** Core's descriptor checksum (`DescriptorChecksum`), appended as `#xxxxxxxx`. */
export function descriptorWithChecksum(desc: string): string {
  let c = 1n;
  let cls = 0;
  let clscount = 0;
  for (const ch of desc) {
    const pos = DESC_INPUT_CHARSET.indexOf(ch);
    if (pos < 0) return desc;
    c = descPolymod(c, pos & 31);
    cls = cls * 3 + (pos >> 5);
    if (++clscount === 3) {
      c = descPolymod(c, cls);
      cls = 0;
      clscount = 0;
    }
  }
  if (clscount > 0) c = descPolymod(c, cls);
  for (let j = 0; j < 8; j++) c = descPolymod(c, 0);
  c ^= 1n;
  let sum = "";
  for (let j = 0; j < 8; j++) {
    sum += DESC_CHECKSUM_CHARSET[Number((c >> BigInt(5 * (7 - j))) & 31n)];
  }
  return `${desc}#${sum}`;
}

function inferDescriptor(script: Uint8Array): string {
  const { type, address } = classifyScript(script);
  if (address) return descriptorWithChecksum(`addr(${address})`);
  if (type === "pubkey") {
    const { ops } = parseScript(script);
    return descriptorWithChecksum(`pk(${toHex(ops[0].data!)})`);
  }
  if (type === "multisig") {
    const { ops } = parseScript(script);
    const keys = ops.slice(1, -2).map((op) => toHex(op.data!));
    return descriptorWithChecksum(`multi(${ops[0].opcode - 0x50},${keys.join(",")})`);
  }
  return descriptorWithChecksum(`raw(${toHex(script)})`);
}

// ---------------------------------------------------------------------------------------------
// JSON as bitcoind writes it (amounts with 8 decimals)
// ---------------------------------------------------------------------------------------------

/** A BTC amount, written as bitcoind writes amounts: a JSON number with 8 decimals. */
export class Amount {
  constructor(readonly sats: bigint) {}
  toJSON(): number {
    return Number(this.sats) / 1e8;
  }
}

function writeJson(value: unknown): string {
  if (value instanceof Amount) {
    const sign = value.sats < 0n ? "-" : "";
    const abs = value.sats < 0n ? -value.sats : value.sats;
    return `${sign}${abs / 100_000_000n}.${(abs % 100_000_000n).toString().padStart(8, "0")}`;
  }
  if (value === null || value === undefined) return "null";
  if (typeof value === "bigint") return value.toString();
  if (typeof value === "number" || typeof value === "boolean" || typeof value === "string") {
    return JSON.stringify(value);
  }
  if (Array.isArray(value)) return `[${value.map(writeJson).join(",")}]`;
  if (typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .map(([k, v]) => `${JSON.stringify(k)}:${writeJson(v)}`);
    return `{${entries.join(",")}}`;
  }
  return "null";
}

// ---------------------------------------------------------------------------------------------
// Transactions and blocks
// ---------------------------------------------------------------------------------------------

/** Core's decoderawtransaction / TxToUniv view of a transaction. */
export function txToJson(tx: Transaction, includeHex = false): Record<string, unknown> {
  const weight = tx.weight();
  const out: Record<string, unknown> = {
    txid: tx.getId(),
    // The wtxid (for a coinbase too: only the witness merkle tree uses zero for it)
    hash: toHex(reversed(sha256d(tx.toBuffer()))),
    version: tx.version | 0,
    size: tx.byteLength(true),
    vsize: Math.ceil(weight / 4),
    weight,
    locktime: tx.locktime,
    vin: tx.ins.map((input) => {
      const entry: Record<string, unknown> = {};
      if (tx.isCoinbase()) {
        entry.coinbase = toHex(input.script);
      } else {
        entry.txid = toHex(reversed(input.hash));
        entry.vout = input.index;
        entry.scriptSig = { asm: scriptToAsm(input.script, true), hex: toHex(input.script) };
      }
      if (input.witness.length) entry.txinwitness = input.witness.map(toHex);
      entry.sequence = input.sequence;
      return entry;
    }),
    vout: tx.outs.map((output, n) => {
      const { type, address } = classifyScript(output.script);
      return {
        value: new Amount(output.value),
        n,
        scriptPubKey: {
          asm: scriptToAsm(output.script),
          desc: inferDescriptor(output.script),
          hex: toHex(output.script),
          address: type === "pubkey" ? undefined : address,
          type,
        },
      };
    }),
  };
  if (includeHex) out.hex = tx.toHex();
  return out;
}

/** A block split into its parts. */
export interface DecodedBlock {
  header: Uint8Array;
  version: number;
  prevHash: string;
  merkleRoot: Uint8Array;
  time: number;
  bits: number;
  nonce: number;
  txs: Transaction[];
  /** Display-order block hash. */
  hash: string;
}

/** Parses a serialized block; throws when it is not exactly one block. */
export function decodeBlock(bytes: Uint8Array): DecodedBlock {
  const reader = new Reader(bytes);
  const header = reader.take(80);
  const view = new DataView(header.buffer, header.byteOffset, 80);
  const count = reader.varint();
  if (count > 1_000_000) throw new Error("too many transactions");
  const txs: Transaction[] = [];
  for (let i = 0; i < count; i++) {
    const tx = Transaction.fromBuffer(bytes.subarray(reader.offset), true);
    reader.offset += tx.byteLength(true);
    if (reader.offset > bytes.length) throw new Error("read past end");
    txs.push(tx);
  }
  if (!reader.done) throw new Error("trailing data");
  return {
    header: Uint8Array.from(header),
    version: view.getInt32(0, true),
    prevHash: toHex(reversed(header.subarray(4, 36))),
    merkleRoot: Uint8Array.from(header.subarray(36, 68)),
    time: view.getUint32(68, true),
    bits: view.getUint32(72, true),
    nonce: view.getUint32(76, true),
    txs,
    hash: toHex(reversed(sha256d(header))),
  };
}

/** Serializes an 80-byte header. `prevHash` and `merkleRoot` are display-order hex. */
export function serializeHeader(h: {
  version: number;
  prevHash: string;
  merkleRoot: string;
  time: number;
  bits: number;
  nonce: number;
}): Uint8Array {
  return concatBytes(
    u32le(h.version),
    reversed(fromHex(h.prevHash)),
    reversed(fromHex(h.merkleRoot)),
    u32le(h.time),
    u32le(h.bits),
    u32le(h.nonce),
  );
}

/** Serializes a whole block (transactions with their witnesses). */
export function serializeBlock(header: Uint8Array, txs: Transaction[]): Uint8Array {
  return concatBytes(header, varint(txs.length), ...txs.map((tx) => tx.toBuffer()));
}

/** Core's ComputeMerkleRoot over internal-order hashes, with CVE-2012-2459 mutation detection. */
export function merkleRoot(leaves: Uint8Array[]): { root: Uint8Array; mutated: boolean } {
  if (leaves.length === 0) return { root: new Uint8Array(32), mutated: false };
  let level = leaves.slice();
  let mutated = false;
  while (level.length > 1) {
    for (let pos = 0; pos + 1 < level.length; pos += 2) {
      if (bytesEqual(level[pos], level[pos + 1])) mutated = true;
    }
    if (level.length % 2) level.push(level[level.length - 1]);
    const next: Uint8Array[] = [];
    for (let i = 0; i < level.length; i += 2) {
      next.push(sha256d(concatBytes(level[i], level[i + 1])));
    }
    level = next;
  }
  return { root: level[0], mutated };
}

const WITNESS_COMMITMENT_HEADER = Uint8Array.of(0x6a, 0x24, 0xaa, 0x21, 0xa9, 0xed);

/** Core's GetWitnessCommitmentIndex: the last coinbase output holding a commitment, or -1. */
export function witnessCommitmentIndex(coinbase: Transaction): number {
  let index = -1;
  coinbase.outs.forEach((out, i) => {
    if (
      out.script.length >= 38 && bytesEqual(out.script.subarray(0, 6), WITNESS_COMMITMENT_HEADER)
    ) {
      index = i;
    }
  });
  return index;
}

/** The witness commitment script for these non-coinbase transactions (nonce 32 zero bytes). */
export function witnessCommitmentScript(txs: Transaction[]): Uint8Array {
  const { root } = merkleRoot([new Uint8Array(32), ...txs.map((tx) => tx.getHash(true))]);
  return concatBytes(WITNESS_COMMITMENT_HEADER, sha256d(concatBytes(root, new Uint8Array(32))));
}

/** Core's arith_uint256::SetCompact. */
export function compactToTarget(
  bits: number,
): { target: bigint; negative: boolean; overflow: boolean } {
  const size = bits >>> 24;
  let word = bits & 0x007fffff;
  let target: bigint;
  if (size <= 3) {
    word >>>= 8 * (3 - size);
    target = BigInt(word);
  } else {
    target = BigInt(word) << BigInt(8 * (size - 3));
  }
  const negative = word !== 0 && (bits & 0x00800000) !== 0;
  const overflow = word !== 0 &&
    (size > 34 || (word > 0xff && size > 33) || (word > 0xffff && size > 32));
  return { target, negative, overflow };
}

/** Difficulty 1 target (Bitcoin's "truediffone"). */
export const DIFF1_TARGET = 0xffffn << 208n;

/** Difficulty of a compact target, as bitcoind's GetDifficulty computes it. */
export function bitsToDifficulty(bits: number): number {
  let shift = (bits >>> 24) & 0xff;
  let diff = 0x0000ffff / (bits & 0x00ffffff);
  while (shift < 29) {
    diff *= 256;
    shift++;
  }
  while (shift > 29) {
    diff /= 256;
    shift--;
  }
  return diff;
}

/** Block subsidy at `height` (50 BTC halving every 210000 blocks). */
export function blockSubsidy(height: number): bigint {
  const halvings = Math.floor(height / 210_000);
  return halvings >= 64 ? 0n : (50n * 100_000_000n) >> BigInt(halvings);
}

const MAX_MONEY = 21_000_000n * 100_000_000n;
const MAX_BLOCK_WEIGHT = 4_000_000;
const MAX_BLOCK_SIGOPS_COST = 80_000;

function legacySigOps(script: Uint8Array): number {
  let count = 0;
  for (const op of parseScript(script).ops) {
    if (op.opcode === 0xac || op.opcode === 0xad) count++;
    else if (op.opcode === 0xae || op.opcode === 0xaf) count += 20;
  }
  return count;
}

function txLegacySigOps(tx: Transaction): number {
  let n = 0;
  for (const input of tx.ins) n += legacySigOps(input.script);
  for (const output of tx.outs) n += legacySigOps(output.script);
  return n;
}

// ---------------------------------------------------------------------------------------------
// The chain
// ---------------------------------------------------------------------------------------------

/** Signet's genesis block (the same for every signet). */
export const SIGNET_GENESIS_HASH =
  "00000008819873e925422c1ff0f99f7cc9bbb232af63a077a480a3633bee1ef6";
/** The genesis block's coinbase transaction (the same on every network). */
export const GENESIS_COINBASE_HEX =
  "01000000010000000000000000000000000000000000000000000000000000000000000000" +
  "ffffffff4d04ffff001d0104455468652054696d65732030332f4a616e2f32303039204368616e63656c6c6f72" +
  "206f6e206272696e6b206f66207365636f6e64206261696c6f757420666f722062616e6b73ffffffff0100f2052a" +
  "01000000434104678afdb0fe5548271967f1a67130b7105cd6a828e03909a67962e0ea1f61deb649f6bc3f4cef38" +
  "c4f35504e51ec112de5c384df7ba0b8d578a4c702b6bf11d5fac00000000";
/** Signet's default challenge (a 1-of-2 multisig) — blocks can only meet it with the keys. */
export const SIGNET_DEFAULT_CHALLENGE =
  "512103ad5e0edad18cb1f0fc0d28a3d4f1f3e445640337489abb10404f2d1e086be430210359ef5021964fe22d6f8e05b2463c9540ce96883fe3b278760f048f5189f2e6c452ae";

/** A block the peer knows. */
export interface ChainBlock {
  hash: string;
  height: number;
  prevHash: string;
  version: number;
  time: number;
  bits: number;
  nonce: number;
  merkleRoot: string;
  txs: Transaction[];
  /** Cumulative chain work up to and including this block. */
  chainWork: bigint;
  /** `valid`: passed every check; `invalid`: failed a check after it was stored. */
  status: "valid" | "invalid";
  /** Whether the header meets its target (blocks made by {@link BitcoindPeer.mineBlock} may not). */
  powValid: boolean;
  /** Where the block came from. */
  source: "genesis" | "mined" | "submitted";
}

/** A decoded coinbase output. */
export interface CoinbaseOutput {
  valueSats: bigint;
  scriptPubKey: string;
  type: ScriptType;
  address?: string;
}

/** One `submitblock` call, as the test sees it. */
export interface SubmittedBlock {
  /** Display-order hash, or undefined when the data did not decode. */
  hash?: string;
  hex: string;
  /** The submitblock result: null (accepted), a BIP22 string, or an RPC error message. */
  result: string | null;
  /** Whether the block became (part of) the best chain. */
  accepted: boolean;
  prevHash?: string;
  /** Height the block would have on its parent. */
  height?: number;
  coinbase?: {
    scriptSigHex: string;
    /** Height from the BIP34 push at the start of the coinbase scriptSig. */
    bip34Height?: number;
    outputs: CoinbaseOutput[];
  };
  at: Date;
}

/** One RPC request received. */
export interface RpcCall {
  method: string;
  params: unknown;
  id: unknown;
  at: Date;
  /** The error code when the call failed. */
  errorCode?: number;
}

interface MempoolEntry {
  tx: Transaction;
  fee: bigint;
}

class RpcError extends Error {
  constructor(readonly code: number, message: string) {
    super(message);
  }
}

const RPC_MISC_ERROR = -1;
const RPC_TYPE_ERROR = -3;
const RPC_INVALID_ADDRESS_OR_KEY = -5;
const RPC_INVALID_PARAMETER = -8;
const RPC_DESERIALIZATION_ERROR = -22;
const RPC_VERIFY_ALREADY_IN_CHAIN = -27;
const RPC_INVALID_REQUEST = -32600;
const RPC_METHOD_NOT_FOUND = -32601;
const RPC_PARSE_ERROR = -32700;

function bip34Height(scriptSig: Uint8Array): number | undefined {
  const { ops } = parseScript(scriptSig);
  const first = ops[0];
  if (!first) return undefined;
  if (first.opcode === 0) return 0;
  if (first.opcode >= 0x51 && first.opcode <= 0x60) return first.opcode - 0x50;
  if (first.data && first.data.length <= 4) return scriptNumValue(first.data);
  return undefined;
}

/** The outputs of a coinbase transaction, decoded. */
export function coinbaseOutputs(coinbase: Transaction): CoinbaseOutput[] {
  return coinbase.outs.map((out) => {
    const { type, address } = classifyScript(out.script);
    return { valueSats: out.value, scriptPubKey: toHex(out.script), type, address };
  });
}

type BlockCheck = { ok: true } | { ok: false; reason: string; mutated?: boolean };

class Chain {
  readonly blocks = new Map<string, ChainBlock>();
  active: ChainBlock[] = [];
  readonly mempool = new Map<string, MempoolEntry>();
  transactionsUpdated = 0;
  readonly powLimit: bigint;

  constructor(
    readonly bits: number,
    readonly signetChallenge: string,
    readonly now: () => number,
  ) {
    const { target } = compactToTarget(bits);
    const signetLimit = 0x00000377aen << 216n;
    this.powLimit = target > signetLimit ? target : signetLimit;
    const coinbase = Transaction.fromHex(GENESIS_COINBASE_HEX);
    const header = serializeHeader({
      version: 1,
      prevHash: "00".repeat(32),
      merkleRoot: coinbase.getId(),
      time: 1598918400,
      bits: 0x1e0377ae,
      nonce: 52613770,
    });
    const genesis: ChainBlock = {
      hash: toHex(reversed(sha256d(header))),
      height: 0,
      prevHash: "00".repeat(32),
      version: 1,
      time: 1598918400,
      bits: 0x1e0377ae,
      nonce: 52613770,
      merkleRoot: coinbase.getId(),
      txs: [coinbase],
      chainWork: blockWork(0x1e0377ae),
      status: "valid",
      powValid: true,
      source: "genesis",
    };
    this.blocks.set(genesis.hash, genesis);
    this.active = [genesis];
  }

  get tip(): ChainBlock {
    return this.active[this.active.length - 1];
  }

  medianTimePast(block: ChainBlock): number {
    const times: number[] = [];
    let cursor: ChainBlock | undefined = block;
    for (let i = 0; i < 11 && cursor; i++) {
      times.push(cursor.time);
      cursor = this.blocks.get(cursor.prevHash);
    }
    times.sort((a, b) => a - b);
    return times[Math.floor(times.length / 2)];
  }

  inActiveChain(block: ChainBlock): boolean {
    return this.active[block.height]?.hash === block.hash;
  }

  /** Core's CheckBlock (context-free checks). */
  checkBlock(block: DecodedBlock, checkPow: boolean): BlockCheck {
    if (checkPow) {
      const { target, negative, overflow } = compactToTarget(block.bits);
      const hash = hashToBigInt(sha256d(block.header));
      if (negative || overflow || target === 0n || target > this.powLimit || hash > target) {
        return { ok: false, reason: "high-hash" };
      }
      if (!this.checkSignetSolution(block)) return { ok: false, reason: "bad-signet-blksig" };
    }
    const { root, mutated } = merkleRoot(block.txs.map((tx) => tx.getHash()));
    if (!bytesEqual(root, block.merkleRoot)) {
      return { ok: false, reason: "bad-txnmrklroot", mutated: true };
    }
    if (mutated) return { ok: false, reason: "bad-txns-duplicate", mutated: true };
    const strippedSize = 80 + varint(block.txs.length).length +
      block.txs.reduce((sum, tx) => sum + tx.byteLength(false), 0);
    if (
      block.txs.length === 0 || block.txs.length * 4 > MAX_BLOCK_WEIGHT ||
      strippedSize * 4 > MAX_BLOCK_WEIGHT
    ) {
      return { ok: false, reason: "bad-blk-length" };
    }
    if (!block.txs[0].isCoinbase()) return { ok: false, reason: "bad-cb-missing" };
    for (const tx of block.txs.slice(1)) {
      if (tx.isCoinbase()) return { ok: false, reason: "bad-cb-multiple" };
    }
    for (const tx of block.txs) {
      const reason = checkTransaction(tx);
      if (reason) return { ok: false, reason };
    }
    const sigops = block.txs.reduce((sum, tx) => sum + txLegacySigOps(tx), 0);
    if (sigops * 4 > MAX_BLOCK_SIGOPS_COST) return { ok: false, reason: "bad-blk-sigops" };
    return { ok: true };
  }

  /** BIP325 for the OP_TRUE challenge; any other challenge would need signatures. */
  checkSignetSolution(block: DecodedBlock): boolean {
    const coinbase = block.txs[0];
    if (!coinbase) return false;
    const index = witnessCommitmentIndex(coinbase);
    if (index < 0) return false;
    if (this.signetChallenge !== "51") return false;
    const { ops, complete } = parseScript(coinbase.outs[index].script);
    if (!complete) return false;
    const SIGNET_HEADER = Uint8Array.of(0xec, 0xc7, 0xda, 0xa2);
    const section = ops.find((op) =>
      op.data && op.data.length > 4 && bytesEqual(op.data.subarray(0, 4), SIGNET_HEADER)
    );
    if (!section) return true; // no solution: fine for OP_TRUE
    try {
      const reader = new Reader(section.data!.subarray(4));
      const scriptSig = reader.take(reader.varint());
      const items = reader.varint();
      for (let i = 0; i < items; i++) reader.take(reader.varint());
      if (!reader.done || items > 0) return false; // a witness for a non-witness challenge fails
      const parsed = parseScript(scriptSig);
      return parsed.complete && parsed.ops.every((op) => op.opcode <= 0x60);
    } catch {
      return false;
    }
  }

  /** Core's ContextualCheckBlockHeader. */
  contextualCheckHeader(block: DecodedBlock, prev: ChainBlock): BlockCheck {
    if (block.bits !== this.bits) return { ok: false, reason: "bad-diffbits" };
    if (block.time <= this.medianTimePast(prev)) return { ok: false, reason: "time-too-old" };
    if (block.time > this.now() + 2 * 60 * 60) return { ok: false, reason: "time-too-new" };
    if (block.version < 4) {
      return {
        ok: false,
        reason: `bad-version(0x${(block.version >>> 0).toString(16).padStart(8, "0")})`,
      };
    }
    return { ok: true };
  }

  /** Core's ContextualCheckBlock. */
  contextualCheckBlock(block: DecodedBlock, prev: ChainBlock): BlockCheck {
    const height = prev.height + 1;
    const cutoff = this.medianTimePast(prev);
    for (const tx of block.txs) {
      if (!isFinalTx(tx, height, cutoff)) return { ok: false, reason: "bad-txns-nonfinal" };
    }
    const expect = scriptPushInt(height);
    const scriptSig = block.txs[0].ins[0].script;
    if (
      scriptSig.length < expect.length || !bytesEqual(scriptSig.subarray(0, expect.length), expect)
    ) {
      return { ok: false, reason: "bad-cb-height" };
    }
    let haveWitness = false;
    const commitIndex = witnessCommitmentIndex(block.txs[0]);
    if (commitIndex >= 0) {
      const { root } = merkleRoot([
        new Uint8Array(32),
        ...block.txs.slice(1).map((tx) => tx.getHash(true)),
      ]);
      const stack = block.txs[0].ins[0].witness;
      if (stack.length !== 1 || stack[0].length !== 32) {
        return { ok: false, reason: "bad-witness-nonce-size", mutated: true };
      }
      const commitment = sha256d(concatBytes(root, stack[0]));
      if (!bytesEqual(commitment, block.txs[0].outs[commitIndex].script.subarray(6, 38))) {
        return { ok: false, reason: "bad-witness-merkle-match", mutated: true };
      }
      haveWitness = true;
    }
    if (!haveWitness && block.txs.some((tx) => tx.hasWitnesses())) {
      return { ok: false, reason: "unexpected-witness", mutated: true };
    }
    const weight = 80 * 4 + varint(block.txs.length).length * 4 +
      block.txs.reduce((sum, tx) => sum + tx.weight(), 0);
    if (weight > MAX_BLOCK_WEIGHT) return { ok: false, reason: "bad-blk-weight" };
    return { ok: true };
  }

  /** The part of ConnectBlock this peer can check: known inputs and the coinbase amount. */
  connectCheck(block: DecodedBlock, height: number): BlockCheck {
    let fees = 0n;
    for (const tx of block.txs.slice(1)) {
      const entry = this.mempool.get(tx.getId());
      if (!entry) return { ok: false, reason: "bad-txns-inputs-missingorspent" };
      fees += entry.fee;
    }
    const paid = block.txs[0].outs.reduce((sum, out) => sum + out.value, 0n);
    if (paid > blockSubsidy(height) + fees) return { ok: false, reason: "bad-cb-amount" };
    return { ok: true };
  }

  /** Core's UpdateUncommittedBlockStructures: fills in a missing witness reserved value. */
  updateUncommitted(block: DecodedBlock): void {
    const coinbase = block.txs[0];
    if (!coinbase || !this.blocks.has(block.prevHash)) return;
    if (
      witnessCommitmentIndex(coinbase) >= 0 && coinbase.ins.length &&
      coinbase.ins[0].witness.length === 0
    ) {
      coinbase.ins[0].witness = [new Uint8Array(32)];
    }
  }

  /**
   * Processes a block as submitblock does. Returns the submitblock result: null when the block
   * became the tip, else a BIP22 string.
   */
  submit(block: DecodedBlock, source: ChainBlock["source"], checkPow = true): string | null {
    const known = this.blocks.get(block.hash);
    if (known) return known.status === "valid" ? "duplicate" : "duplicate-invalid";
    this.updateUncommitted(block);
    const check = this.checkBlock(block, checkPow);
    if (!check.ok) return check.reason;
    const prev = this.blocks.get(block.prevHash);
    if (!prev) return "prev-blk-not-found";
    if (prev.status === "invalid") return "bad-prevblk";
    const header = this.contextualCheckHeader(block, prev);
    if (!header.ok) return header.reason;
    const entry: ChainBlock = {
      hash: block.hash,
      height: prev.height + 1,
      prevHash: block.prevHash,
      version: block.version,
      time: block.time,
      bits: block.bits,
      nonce: block.nonce,
      merkleRoot: toHex(reversed(block.merkleRoot)),
      txs: block.txs,
      chainWork: prev.chainWork + blockWork(block.bits),
      status: "valid",
      powValid: checkPow ||
        hashToBigInt(sha256d(block.header)) <= compactToTarget(block.bits).target,
      source,
    };
    const contextual = this.contextualCheckBlock(block, prev);
    if (!contextual.ok) {
      if (!contextual.mutated) {
        entry.status = "invalid";
        this.blocks.set(entry.hash, entry);
      }
      return contextual.reason;
    }
    this.blocks.set(entry.hash, entry);
    if (entry.chainWork <= this.tip.chainWork) return "inconclusive";
    return this.activate(entry);
  }

  /** Makes `newTip` the tip (reorganising if needed); returns the BIP22 result. */
  activate(newTip: ChainBlock): string | null {
    const branch: ChainBlock[] = [];
    let cursor: ChainBlock | undefined = newTip;
    while (cursor && !this.inActiveChain(cursor)) {
      branch.unshift(cursor);
      cursor = this.blocks.get(cursor.prevHash);
    }
    if (!cursor) return "prev-blk-not-found";
    const keep = this.active.slice(0, cursor.height + 1);
    const disconnected = this.active.slice(cursor.height + 1);
    for (const old of disconnected) {
      for (const tx of old.txs.slice(1)) this.mempool.set(tx.getId(), { tx, fee: 0n });
    }
    for (const block of branch) {
      const check = this.connectCheck(
        {
          header: new Uint8Array(80),
          version: block.version,
          prevHash: block.prevHash,
          merkleRoot: new Uint8Array(32),
          time: block.time,
          bits: block.bits,
          nonce: block.nonce,
          txs: block.txs,
          hash: block.hash,
        },
        block.height,
      );
      if (!check.ok) {
        block.status = "invalid";
        this.active = keep.concat(disconnected);
        return check.reason;
      }
      keep.push(block);
      for (const tx of block.txs.slice(1)) this.mempool.delete(tx.getId());
    }
    this.active = keep;
    this.transactionsUpdated++;
    return null;
  }
}

function blockWork(bits: number): bigint {
  const { target, negative, overflow } = compactToTarget(bits);
  if (negative || overflow || target === 0n) return 0n;
  return (1n << 256n) / (target + 1n);
}

function isFinalTx(tx: Transaction, height: number, cutoff: number): boolean {
  if (tx.locktime === 0) return true;
  if (tx.locktime < (tx.locktime < 500_000_000 ? height : cutoff)) return true;
  return tx.ins.every((input) => input.sequence === 0xffffffff);
}

/** Core's CheckTransaction: the reject reason, or undefined. */
function checkTransaction(tx: Transaction): string | undefined {
  if (tx.ins.length === 0) return "bad-txns-vin-empty";
  if (tx.outs.length === 0) return "bad-txns-vout-empty";
  if (tx.byteLength(false) * 4 > MAX_BLOCK_WEIGHT) return "bad-txns-oversize";
  let total = 0n;
  for (const out of tx.outs) {
    if (out.value < 0n) return "bad-txns-vout-negative";
    if (out.value > MAX_MONEY) return "bad-txns-vout-toolarge";
    total += out.value;
    if (total > MAX_MONEY) return "bad-txns-txouttotal-toolarge";
  }
  const seen = new Set<string>();
  for (const input of tx.ins) {
    const key = `${toHex(input.hash)}:${input.index}`;
    if (seen.has(key)) return "bad-txns-inputs-duplicate";
    seen.add(key);
  }
  if (tx.isCoinbase()) {
    const len = tx.ins[0].script.length;
    if (len < 2 || len > 100) return "bad-cb-length";
  } else {
    for (const input of tx.ins) {
      if (input.index === 0xffffffff && input.hash.every((b) => b === 0)) {
        return "bad-txns-prevout-null";
      }
    }
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// The peer
// ---------------------------------------------------------------------------------------------

/** Options for {@link startBitcoindPeer}. */
export interface BitcoindPeerOptions {
  /** RPC user (default "tbg"). */
  user?: string;
  /** RPC password (default "tbgpass"). */
  pass?: string;
  /** Compact target of every block after genesis (default 0x207fffff, regtest-easy). */
  bits?: number;
  /** Blocks on top of genesis at start (default 110: BIP34 heights > 16 are plain pushes). */
  height?: number;
  /** Signet challenge script hex (default "51", OP_TRUE: anyone can mine). */
  signetChallenge?: string;
  /** Address the peer's own blocks ({@link BitcoindPeer.mineBlock}) pay to. */
  payoutAddress?: string;
  /** Clock in epoch seconds (default the wall clock). */
  now?: () => number;
  /** TCP port on 127.0.0.1 (default 0: any free port). */
  port?: number;
  /** Delay before a 401 reply, as bitcoind's brute-force deterrent (default 250 ms). */
  authFailureDelayMs?: number;
}

/** A running peer. */
export interface BitcoindPeer {
  readonly port: number;
  /** `127.0.0.1:PORT`, the form ckpool's `btcd.url` takes. */
  readonly url: string;
  /** `http://127.0.0.1:PORT/`. */
  readonly rpcUrl: string;
  readonly user: string;
  readonly pass: string;
  readonly bits: number;
  /** Display-order hash of the best block. */
  readonly tipHash: string;
  readonly height: number;
  /** Every submitblock call, in order. */
  readonly submitted: SubmittedBlock[];
  /** Every RPC method called, in order (batch members included). */
  readonly calls: string[];
  /** Every RPC request with its params. */
  readonly requests: RpcCall[];
  /** The active chain's block at `height`. */
  blockAt(height: number): ChainBlock | undefined;
  /** Any known block by display-order hash. */
  block(hash: string): ChainBlock | undefined;
  /**
   * "The network found a block": appends a block on the tip paying `payoutAddress` (mempool
   * transactions included), so getbestblockhash and getblockcount change. Its header meets the
   * target when the target is easy enough to grind in JS (< 2^22 expected hashes); otherwise it is
   * taken as the network's word without proof of work. Returns the new tip hash.
   */
  mineBlock(options?: { payoutAddress?: string; time?: number }): Promise<string>;
  /** Puts a transaction in the mempool (inputs unchecked) so templates carry it; returns txid. */
  addMempoolTransaction(hex: string, feeSats?: bigint): string;
  /** Resolves with the first call of `method` at index >= `fromIndex` in {@link calls}. */
  waitForCall(
    method: string,
    options?: { fromIndex?: number; timeoutMs?: number },
  ): Promise<RpcCall>;
  /** Resolves once `submitted.length > count`, with the next submission. */
  waitForSubmission(options?: { count?: number; timeoutMs?: number }): Promise<SubmittedBlock>;
  /** Calls the peer's own RPC over HTTP with valid auth (for tests). */
  rpc(method: string, params?: unknown[] | Record<string, unknown>): Promise<unknown>;
  close(): Promise<void>;
}

interface Waiter {
  check: () => boolean;
  resolve: () => void;
}

/** Starts a peer on 127.0.0.1 (listening once this resolves). */
export function startBitcoindPeer(options: BitcoindPeerOptions = {}): Promise<BitcoindPeer> {
  try {
    return Promise.resolve(createPeer(options));
  } catch (error) {
    return Promise.reject(error);
  }
}

function createPeer(options: BitcoindPeerOptions): BitcoindPeer {
  const user = options.user ?? "tbg";
  const pass = options.pass ?? "tbgpass";
  const bits = options.bits ?? 0x207fffff;
  const now = options.now ?? (() => Math.floor(Date.now() / 1000));
  const challenge = (options.signetChallenge ?? "51").toLowerCase();
  const payoutScript = options.payoutAddress
    ? addressToScript(options.payoutAddress)
    : Uint8Array.of(0x51); // OP_TRUE
  const authDelay = options.authFailureDelayMs ?? 250;
  const chain = new Chain(bits, challenge, now);
  const submitted: SubmittedBlock[] = [];
  const calls: string[] = [];
  const requests: RpcCall[] = [];
  let waiters: Waiter[] = [];
  let closed = false;

  const notify = () => {
    const still: Waiter[] = [];
    for (const waiter of waiters) {
      if (waiter.check()) waiter.resolve();
      else still.push(waiter);
    }
    waiters = still;
  };

  const waitUntil = (check: () => boolean, timeoutMs: number, what: string) =>
    new Promise<void>((resolve, reject) => {
      if (check()) return resolve();
      const timer = setTimeout(() => {
        waiters = waiters.filter((w) => w !== waiter);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`));
      }, timeoutMs);
      const waiter: Waiter = {
        check,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      };
      waiters.push(waiter);
    });

  const buildBlock = (script: Uint8Array, time: number) => {
    const prev = chain.tip;
    const height = prev.height + 1;
    const txs = [...chain.mempool.values()].map((e) => e.tx);
    const fees = [...chain.mempool.values()].reduce((sum, e) => sum + e.fee, 0n);
    const coinbase = new Transaction();
    coinbase.version = 2;
    coinbase.addInput(
      new Uint8Array(32),
      0xffffffff,
      0xffffffff,
      concatBytes(scriptPushInt(height), scriptPushData(new TextEncoder().encode("tbg-peer"))),
    );
    coinbase.addOutput(script, blockSubsidy(height) + fees);
    coinbase.addOutput(witnessCommitmentScript(txs), 0n);
    coinbase.setWitness(0, [new Uint8Array(32)]);
    const all = [coinbase, ...txs];
    const root = merkleRoot(all.map((tx) => tx.getHash())).root;
    const header = serializeHeader({
      version: 0x20000000,
      prevHash: prev.hash,
      merkleRoot: toHex(reversed(root)),
      time,
      bits,
      nonce: 0,
    });
    return { header, txs: all };
  };

  const mineOne = (script: Uint8Array, time?: number): string => {
    const blockTime = time ?? Math.max(chain.medianTimePast(chain.tip) + 1, now());
    const { header, txs } = buildBlock(script, blockTime);
    const { target } = compactToTarget(bits);
    const expected = (1n << 256n) / (target + 1n);
    let solved = false;
    if (expected < 1n << 22n) {
      const view = new DataView(header.buffer);
      for (let nonce = 0; nonce < 0xffffffff; nonce++) {
        view.setUint32(76, nonce, true);
        if (hashToBigInt(sha256d(header)) <= target) {
          solved = true;
          break;
        }
      }
    }
    const block = decodeBlock(serializeBlock(header, txs));
    const result = chain.submit(block, "mined", solved);
    if (result !== null) throw new Error(`peer could not extend its own chain: ${result}`);
    notify();
    return block.hash;
  };

  const initialHeight = options.height ?? 110;
  const start = now() - initialHeight * 600;
  for (let i = 1; i <= initialHeight; i++) mineOne(payoutScript, start + (i - 1) * 600);

  // -------------------------------------------------------------------------------------------
  // RPC methods
  // -------------------------------------------------------------------------------------------

  const typeName = (v: unknown) =>
    v === null
      ? "null"
      : Array.isArray(v)
      ? "array"
      : typeof v === "boolean"
      ? "bool"
      : typeof v === "object"
      ? "object"
      : typeof v;
  const expectType = (v: unknown, expected: "string" | "number" | "object" | "bool" | "array") => {
    if (typeName(v) !== expected) {
      throw new RpcError(
        RPC_TYPE_ERROR,
        `JSON value of type ${typeName(v)} is not of expected type ${expected}`,
      );
    }
  };
  const parseHash = (v: unknown, name: string): string => {
    expectType(v, "string");
    const s = v as string;
    if (s.length !== 64) {
      throw new RpcError(
        RPC_INVALID_PARAMETER,
        `${name} must be of length 64 (not ${s.length}, for '${s}')`,
      );
    }
    if (!/^[0-9a-fA-F]{64}$/.test(s)) {
      throw new RpcError(RPC_INVALID_PARAMETER, `${name} must be hexadecimal string (not '${s}')`);
    }
    return s.toLowerCase();
  };

  interface Method {
    args: string[];
    required: number;
    help: string;
    run: (args: unknown[]) => unknown | Promise<unknown>;
  }

  const decodeHexBlock = (hex: unknown): DecodedBlock => {
    expectType(hex, "string");
    try {
      return decodeBlock(fromHex(hex as string));
    } catch {
      throw new RpcError(RPC_DESERIALIZATION_ERROR, "Block decode failed");
    }
  };

  const decodeHexTx = (hex: unknown, message: string): Transaction => {
    expectType(hex, "string");
    try {
      return Transaction.fromHex(hex as string);
    } catch {
      throw new RpcError(RPC_DESERIALIZATION_ERROR, message);
    }
  };

  const recordSubmission = (
    hex: string,
    block: DecodedBlock | undefined,
    result: string | null,
  ) => {
    const coinbase = block?.txs[0];
    const prev = block ? chain.blocks.get(block.prevHash) : undefined;
    submitted.push({
      hash: block?.hash,
      hex,
      result,
      accepted: result === null,
      prevHash: block?.prevHash,
      height: prev ? prev.height + 1 : undefined,
      coinbase: coinbase && coinbase.ins.length
        ? {
          scriptSigHex: toHex(coinbase.ins[0].script),
          bip34Height: bip34Height(coinbase.ins[0].script),
          outputs: coinbaseOutputs(coinbase),
        }
        : undefined,
      at: new Date(),
    });
  };

  const template = (request: Record<string, unknown>) => {
    const rules = new Set<string>();
    if (Array.isArray(request.rules)) {
      for (const rule of request.rules) {
        expectType(rule, "string");
        rules.add(rule as string);
      }
    }
    if (!rules.has("signet")) {
      throw new RpcError(
        RPC_INVALID_PARAMETER,
        'getblocktemplate must be called with the signet rule set (call with {"rules": ["segwit", "signet"]})',
      );
    }
    if (!rules.has("segwit")) {
      throw new RpcError(
        RPC_INVALID_PARAMETER,
        'getblocktemplate must be called with the segwit rule set (call with {"rules": ["segwit"]})',
      );
    }
    const prev = chain.tip;
    const entries = [...chain.mempool.values()];
    const fees = entries.reduce((sum, e) => sum + e.fee, 0n);
    const height = prev.height + 1;
    const mintime = chain.medianTimePast(prev) + 1;
    return {
      capabilities: ["proposal"],
      version: 0x20000000,
      rules: ["csv", "!segwit", "!signet"],
      vbavailable: {},
      vbrequired: 0,
      previousblockhash: prev.hash,
      transactions: entries.map((e) => ({
        data: e.tx.toHex(),
        txid: e.tx.getId(),
        hash: toHex(reversed(e.tx.getHash(true))),
        depends: [],
        fee: e.fee,
        sigops: txLegacySigOps(e.tx) * 4,
        weight: e.tx.weight(),
      })),
      coinbaseaux: {},
      coinbasevalue: blockSubsidy(height) + fees,
      longpollid: prev.hash + String(chain.transactionsUpdated),
      target: compactToTarget(bits).target.toString(16).padStart(64, "0"),
      mintime,
      mutable: ["time", "transactions", "prevblock"],
      noncerange: "00000000ffffffff",
      sigoplimit: MAX_BLOCK_SIGOPS_COST,
      sizelimit: 4_000_000,
      weightlimit: MAX_BLOCK_WEIGHT,
      curtime: Math.max(mintime, now()),
      bits: bits.toString(16).padStart(8, "0"),
      height,
      signet_challenge: challenge,
      default_witness_commitment: toHex(witnessCommitmentScript(entries.map((e) => e.tx))),
    };
  };

  const methods: Record<string, Method> = {
    getblockcount: {
      args: [],
      required: 0,
      help: "getblockcount\n\nReturns the height of the most-work fully-validated chain.\n",
      run: () => chain.tip.height,
    },
    getbestblockhash: {
      args: [],
      required: 0,
      help:
        "getbestblockhash\n\nReturns the hash of the best (tip) block in the most-work fully-validated chain.\n",
      run: () => chain.tip.hash,
    },
    getblockchaininfo: {
      args: [],
      required: 0,
      help:
        "getblockchaininfo\n\nReturns an object containing various state info regarding blockchain processing.\n",
      run: () => ({
        chain: "signet",
        blocks: chain.tip.height,
        headers: chain.tip.height,
        bestblockhash: chain.tip.hash,
        difficulty: bitsToDifficulty(chain.tip.bits),
        time: chain.tip.time,
        mediantime: chain.medianTimePast(chain.tip),
        verificationprogress: 1,
        initialblockdownload: false,
        chainwork: chain.tip.chainWork.toString(16).padStart(64, "0"),
        size_on_disk: 0,
        pruned: false,
        warnings: "",
      }),
    },
    getblockhash: {
      args: ["height"],
      required: 1,
      help:
        "getblockhash height\n\nReturns hash of block in best-block-chain at height provided.\n",
      run: ([height]) => {
        expectType(height, "number");
        const h = height as number;
        if (!Number.isInteger(h)) {
          throw new RpcError(RPC_TYPE_ERROR, "JSON integer out of range");
        }
        if (h < 0 || h > chain.tip.height) {
          throw new RpcError(RPC_INVALID_PARAMETER, "Block height out of range");
        }
        return chain.active[h].hash;
      },
    },
    getblocktemplate: {
      args: ["template_request"],
      required: 0,
      help:
        "getblocktemplate ( \"template_request\" )\n\nIf the request parameters include a 'mode' key, that is used to explicitly select between the default 'template' request or a 'proposal'.\n",
      run: async ([request]) => {
        const req = (request ?? {}) as Record<string, unknown>;
        if (request !== undefined && request !== null) expectType(request, "object");
        let mode = "template";
        if (req.mode !== undefined && req.mode !== null) {
          expectType(req.mode, "string");
          mode = req.mode as string;
        }
        if (mode === "proposal") {
          if (typeof req.data !== "string") {
            throw new RpcError(RPC_TYPE_ERROR, "Missing data String key for proposal");
          }
          const block = decodeHexBlock(req.data);
          const known = chain.blocks.get(block.hash);
          if (known) return known.status === "valid" ? "duplicate" : "duplicate-invalid";
          if (block.prevHash !== chain.tip.hash) return "inconclusive-not-best-prevblk";
          const prev = chain.tip;
          for (
            const check of [
              () => chain.contextualCheckHeader(block, prev),
              () => chain.checkBlock(block, false),
              () => chain.contextualCheckBlock(block, prev),
              () => chain.connectCheck(block, prev.height + 1),
            ]
          ) {
            const result = check();
            if (!result.ok) return result.reason;
          }
          return null;
        }
        if (mode !== "template") throw new RpcError(RPC_INVALID_PARAMETER, "Invalid mode");
        if (typeof req.longpollid === "string" && req.longpollid.length >= 64) {
          const watched = req.longpollid.slice(0, 64);
          const updated = Number(req.longpollid.slice(64));
          await waitUntil(
            () => closed || chain.tip.hash !== watched || chain.transactionsUpdated !== updated,
            24 * 60 * 60 * 1000,
            "longpoll",
          );
          if (closed) throw new RpcError(-9, "Shutting down");
        }
        return template(req);
      },
    },
    submitblock: {
      args: ["hexdata", "dummy"],
      required: 1,
      help: 'submitblock "hexdata" ( "dummy" )\n\nAttempts to submit new block to network.\n',
      run: ([hex]) => {
        let block: DecodedBlock | undefined;
        try {
          block = decodeHexBlock(hex);
          if (block.txs.length === 0 || !block.txs[0].isCoinbase()) {
            throw new RpcError(RPC_DESERIALIZATION_ERROR, "Block does not start with a coinbase");
          }
        } catch (error) {
          recordSubmission(String(hex), block, (error as Error).message);
          throw error;
        }
        const result = chain.submit(block, "submitted");
        recordSubmission(hex as string, block, result);
        notify();
        return result;
      },
    },
    preciousblock: {
      args: ["blockhash"],
      required: 1,
      help:
        'preciousblock "blockhash"\n\nTreats a block as if it were received before others with the same work.\n',
      run: ([hash]) => {
        const h = parseHash(hash, "blockhash");
        const block = chain.blocks.get(h);
        if (!block) throw new RpcError(RPC_INVALID_ADDRESS_OR_KEY, "Block not found");
        if (
          block.status === "valid" && !chain.inActiveChain(block) &&
          block.chainWork >= chain.tip.chainWork
        ) {
          chain.activate(block);
          notify();
        }
        return null;
      },
    },
    validateaddress: {
      args: ["address"],
      required: 1,
      help: 'validateaddress "address"\n\nReturn information about the given bitcoin address.\n',
      run: ([address]) => {
        expectType(address, "string");
        const decoded = decodeAddress(address as string);
        if (!decoded.ok) {
          return { isvalid: false, error_locations: decoded.errorLocations, error: decoded.error };
        }
        const a = decoded.address;
        const { address: canonical } = classifyScript(a.scriptPubKey);
        return {
          isvalid: true,
          address: canonical ?? address,
          scriptPubKey: toHex(a.scriptPubKey),
          isscript: a.isScript,
          iswitness: a.isWitness,
          witness_version: a.witnessVersion,
          witness_program: a.witnessProgram ? toHex(a.witnessProgram) : undefined,
        };
      },
    },
    decoderawtransaction: {
      args: ["hexstring", "iswitness"],
      required: 1,
      help:
        'decoderawtransaction "hexstring" ( iswitness )\n\nReturn a JSON object representing the serialized, hex-encoded transaction.\n',
      run: ([hex]) => txToJson(decodeHexTx(hex, "TX decode failed")),
    },
    getrawtransaction: {
      args: ["txid", "verbose", "blockhash"],
      required: 1,
      help:
        'getrawtransaction "txid" ( verbosity "blockhash" )\n\nBy default, this call only returns a transaction if it is in the mempool.\n',
      run: ([txid, verbose, blockhash]) => {
        const id = parseHash(txid, "parameter 1");
        const verbosity = verbose === true ? 1 : typeof verbose === "number" ? verbose : 0;
        let tx = chain.mempool.get(id)?.tx;
        let inBlock: ChainBlock | undefined;
        if (blockhash !== undefined && blockhash !== null) {
          const b = chain.blocks.get(parseHash(blockhash, "parameter 3"));
          if (!b) throw new RpcError(RPC_INVALID_ADDRESS_OR_KEY, "Block hash not found");
          tx = b.txs.find((t) => t.getId() === id);
          inBlock = b;
          if (!tx) {
            throw new RpcError(
              RPC_INVALID_ADDRESS_OR_KEY,
              "No such transaction found in the provided block. Use gettransaction for wallet transactions.",
            );
          }
        }
        if (!tx) {
          if (id === chain.active[0].txs[0].getId()) {
            throw new RpcError(
              RPC_INVALID_ADDRESS_OR_KEY,
              "The genesis block coinbase is not considered an ordinary transaction and cannot be retrieved",
            );
          }
          throw new RpcError(
            RPC_INVALID_ADDRESS_OR_KEY,
            "No such mempool transaction. Use -txindex or provide a block hash to enable blockchain transaction queries. Use gettransaction for wallet transactions.",
          );
        }
        if (verbosity === 0) return tx.toHex();
        const out = txToJson(tx, true);
        if (inBlock) {
          out.blockhash = inBlock.hash;
          out.confirmations = chain.inActiveChain(inBlock)
            ? chain.tip.height - inBlock.height + 1
            : 0;
          out.time = inBlock.time;
          out.blocktime = inBlock.time;
          out.in_active_chain = chain.inActiveChain(inBlock);
        }
        return out;
      },
    },
    sendrawtransaction: {
      args: ["hexstring", "maxfeerate", "maxburnamount"],
      required: 1,
      help:
        'sendrawtransaction "hexstring" ( maxfeerate maxburnamount )\n\nSubmit a raw transaction (serialized, hex-encoded) to local node and network.\n',
      run: ([hex]) => {
        const tx = decodeHexTx(hex, "TX decode failed. Make sure the tx has at least one input.");
        const id = tx.getId();
        for (const block of chain.active) {
          if (block.txs.some((t) => t.getId() === id)) {
            throw new RpcError(RPC_VERIFY_ALREADY_IN_CHAIN, "Transaction already in block chain");
          }
        }
        if (!chain.mempool.has(id)) {
          const reason = checkTransaction(tx);
          if (reason || tx.isCoinbase()) throw new RpcError(-26, reason ?? "coinbase");
          chain.mempool.set(id, { tx, fee: 0n });
          chain.transactionsUpdated++;
          notify();
        }
        return id;
      },
    },
  };

  const execute = async (
    request: unknown,
  ): Promise<{ body: Record<string, unknown>; code?: number }> => {
    let id: unknown = null;
    try {
      if (typeof request !== "object" || request === null || Array.isArray(request)) {
        throw new RpcError(RPC_INVALID_REQUEST, "Invalid Request object");
      }
      const req = request as Record<string, unknown>;
      id = req.id ?? null;
      if (req.method === undefined || req.method === null) {
        throw new RpcError(RPC_INVALID_REQUEST, "Missing method");
      }
      if (typeof req.method !== "string") {
        throw new RpcError(RPC_INVALID_REQUEST, "Method must be a string");
      }
      const method = req.method;
      let params = req.params;
      if (params === undefined || params === null) params = [];
      else if (typeof params !== "object") {
        throw new RpcError(RPC_INVALID_REQUEST, "Params must be an array or object");
      }
      calls.push(method);
      const record: RpcCall = { method, params, id, at: new Date() };
      requests.push(record);
      notify();
      try {
        const handler = Object.hasOwn(methods, method) ? methods[method] : undefined;
        if (!handler) throw new RpcError(RPC_METHOD_NOT_FOUND, "Method not found");
        let args: unknown[];
        if (Array.isArray(params)) {
          args = params;
        } else {
          const named = params as Record<string, unknown>;
          for (const key of Object.keys(named)) {
            if (!handler.args.includes(key)) {
              throw new RpcError(RPC_INVALID_PARAMETER, `Unknown named parameter ${key}`);
            }
          }
          args = handler.args.map((name) => named[name]);
          while (args.length && args[args.length - 1] === undefined) args.pop();
        }
        if (args.length > handler.args.length || args.length < handler.required) {
          throw new RpcError(RPC_MISC_ERROR, handler.help);
        }
        const result = await handler.run(args);
        return { body: { result: result ?? null, error: null, id } };
      } catch (error) {
        if (error instanceof RpcError) record.errorCode = error.code;
        throw error;
      }
    } catch (error) {
      const e = error instanceof RpcError
        ? error
        : new RpcError(RPC_MISC_ERROR, String((error as Error)?.message ?? error));
      return {
        body: { result: null, error: { code: e.code, message: e.message }, id },
        code: e.code,
      };
    }
  };

  const handleRpc = async (body: string): Promise<{ status: number; body: string }> => {
    let parsed: unknown;
    try {
      parsed = JSON.parse(body);
    } catch {
      return {
        status: 500,
        body: writeJson({
          result: null,
          error: { code: RPC_PARSE_ERROR, message: "Parse error" },
          id: null,
        }) + "\n",
      };
    }
    if (Array.isArray(parsed)) {
      const replies = [];
      for (const item of parsed) replies.push((await execute(item)).body);
      return { status: 200, body: writeJson(replies) + "\n" };
    }
    if (typeof parsed !== "object" || parsed === null) {
      return {
        status: 500,
        body: writeJson({
          result: null,
          error: { code: RPC_PARSE_ERROR, message: "Top-level object parse error" },
          id: null,
        }) + "\n",
      };
    }
    const { body: reply, code } = await execute(parsed);
    const status = code === undefined
      ? 200
      : code === RPC_INVALID_REQUEST
      ? 400
      : code === RPC_METHOD_NOT_FOUND
      ? 404
      : 500;
    return { status, body: writeJson(reply) + "\n" };
  };

  // -------------------------------------------------------------------------------------------
  // HTTP
  // -------------------------------------------------------------------------------------------

  const expectedAuth = new TextEncoder().encode(`${user}:${pass}`);
  const authorized = (header: string | undefined) => {
    if (!header || !header.startsWith("Basic ")) return false;
    let decoded: Uint8Array;
    try {
      decoded = Uint8Array.from(atob(header.slice(6).trim()), (c) => c.charCodeAt(0));
    } catch {
      return false;
    }
    return decoded.length === expectedAuth.length && timingSafeEqual(decoded, expectedAuth);
  };

  const listener = Deno.listen({ hostname: "127.0.0.1", port: options.port ?? 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const conns = new Set<Deno.Conn>();
  const serving = new Set<Promise<void>>();
  const encoder = new TextEncoder();

  const respond = async (
    conn: Deno.Conn,
    status: number,
    body: string,
    extraHeaders: Record<string, string>,
    keepAlive: boolean,
  ) => {
    const reasons: Record<number, string> = {
      200: "OK",
      400: "Bad Request",
      401: "Unauthorized",
      403: "Forbidden",
      404: "Not Found",
      405: "Method Not Allowed",
      500: "Internal Server Error",
      503: "Service Unavailable",
    };
    const payload = encoder.encode(body);
    const headers: Record<string, string> = {
      ...extraHeaders,
      Date: new Date().toUTCString(),
      "Content-Length": String(payload.length),
    };
    if (!keepAlive) headers.Connection = "close";
    let head = `HTTP/1.1 ${status} ${reasons[status] ?? "Error"}\r\n`;
    for (const [k, v] of Object.entries(headers)) head += `${k}: ${v}\r\n`;
    head += "\r\n";
    const data = concatBytes(encoder.encode(head), payload);
    let written = 0;
    while (written < data.length) written += await conn.write(data.subarray(written));
  };

  const serveConn = async (conn: Deno.Conn) => {
    conns.add(conn);
    let buffer: Uint8Array = new Uint8Array(0);
    const chunk = new Uint8Array(65536);
    const readMore = async (): Promise<boolean> => {
      const n = await conn.read(chunk);
      if (n === null) return false;
      buffer = concatBytes(buffer, chunk.subarray(0, n));
      return true;
    };
    try {
      while (!closed) {
        // Headers end at the first empty line; bitcoind (libevent) accepts LF or CRLF endings.
        let headerEnd = -1;
        let bodyStart = -1;
        while (headerEnd < 0) {
          for (let i = 0; i < buffer.length; i++) {
            if (buffer[i] !== 0x0a) continue;
            let j = i + 1;
            if (buffer[j] === 0x0d) j++;
            if (buffer[j] === 0x0a) {
              headerEnd = i;
              bodyStart = j + 1;
              break;
            }
          }
          if (headerEnd < 0 && !(await readMore())) return;
          if (buffer.length > 1 << 20 && headerEnd < 0) return;
        }
        const headText = new TextDecoder("latin1").decode(buffer.subarray(0, headerEnd));
        const lines = headText.split("\n").map((l) => l.replace(/\r$/, ""));
        while (lines.length && lines[0] === "") lines.shift();
        const [method = "", , version = "HTTP/1.1"] = (lines.shift() ?? "").split(" ");
        const headers = new Map<string, string>();
        for (const line of lines) {
          const colon = line.indexOf(":");
          if (colon > 0) {
            headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
          }
        }
        buffer = buffer.subarray(bodyStart);
        let body: Uint8Array;
        if ((headers.get("transfer-encoding") ?? "").toLowerCase().includes("chunked")) {
          const parts: Uint8Array[] = [];
          while (true) {
            let lineEnd = buffer.indexOf(0x0a);
            while (lineEnd < 0) {
              if (!(await readMore())) return;
              lineEnd = buffer.indexOf(0x0a);
            }
            const size = parseInt(new TextDecoder().decode(buffer.subarray(0, lineEnd)).trim(), 16);
            buffer = buffer.subarray(lineEnd + 1);
            if (!Number.isFinite(size)) return;
            while (buffer.length < size + 1) if (!(await readMore())) return;
            parts.push(buffer.slice(0, size));
            buffer = buffer.subarray(size);
            if (buffer[0] === 0x0d) buffer = buffer.subarray(1);
            if (buffer[0] === 0x0a) buffer = buffer.subarray(1);
            if (size === 0) break;
          }
          body = concatBytes(...parts);
        } else {
          const length = Number(headers.get("content-length") ?? "0");
          while (buffer.length < length) if (!(await readMore())) return;
          body = buffer.slice(0, length);
          buffer = buffer.subarray(length);
        }
        const connection = (headers.get("connection") ?? "").toLowerCase();
        const keepAlive = version === "HTTP/1.0"
          ? connection === "keep-alive"
          : connection !== "close";
        if (method !== "POST") {
          await respond(conn, 405, "JSONRPC server handles only POST requests", {}, keepAlive);
        } else if (!authorized(headers.get("authorization"))) {
          if (authDelay > 0) await new Promise((r) => setTimeout(r, authDelay));
          await respond(conn, 401, "", { "WWW-Authenticate": 'Basic realm="jsonrpc"' }, keepAlive);
        } else {
          const reply = await handleRpc(new TextDecoder().decode(body));
          await respond(
            conn,
            reply.status,
            reply.body,
            { "Content-Type": "application/json" },
            keepAlive,
          );
        }
        if (!keepAlive) return;
      }
    } catch {
      // peer went away
    } finally {
      conns.delete(conn);
      try {
        conn.close();
      } catch {
        // already closed
      }
    }
  };

  const acceptLoop = (async () => {
    try {
      for await (const conn of listener) {
        const served = serveConn(conn);
        serving.add(served);
        served.finally(() => serving.delete(served));
      }
    } catch {
      // listener closed
    }
  })();

  const peer: BitcoindPeer = {
    port,
    url: `127.0.0.1:${port}`,
    rpcUrl: `http://127.0.0.1:${port}/`,
    user,
    pass,
    bits,
    get tipHash() {
      return chain.tip.hash;
    },
    get height() {
      return chain.tip.height;
    },
    submitted,
    calls,
    requests,
    blockAt: (height) => chain.active[height],
    block: (hash) => chain.blocks.get(hash),
    mineBlock: (opts = {}) => {
      const script = opts.payoutAddress ? addressToScript(opts.payoutAddress) : payoutScript;
      return Promise.resolve(mineOne(script, opts.time));
    },
    addMempoolTransaction: (hex, feeSats = 0n) => {
      const tx = Transaction.fromHex(hex);
      if (tx.isCoinbase()) throw new Error("a coinbase cannot enter the mempool");
      const reason = checkTransaction(tx);
      if (reason) throw new Error(`transaction is invalid: ${reason}`);
      chain.mempool.set(tx.getId(), { tx, fee: feeSats });
      chain.transactionsUpdated++;
      notify();
      return tx.getId();
    },
    waitForCall: async (method, { fromIndex = 0, timeoutMs = 10_000 } = {}) => {
      const find = () => requests.findIndex((r, i) => i >= fromIndex && r.method === method);
      await waitUntil(() => find() >= 0, timeoutMs, `RPC call ${method}`);
      return requests[find()];
    },
    waitForSubmission: async ({ count = submitted.length, timeoutMs = 10_000 } = {}) => {
      await waitUntil(() => submitted.length > count, timeoutMs, "a submitblock call");
      return submitted[count];
    },
    rpc: async (method, params = []) => {
      const response = await fetch(`http://127.0.0.1:${port}/`, {
        method: "POST",
        headers: {
          Authorization: `Basic ${btoa(`${user}:${pass}`)}`,
          "Content-Type": "application/json",
        },
        body: JSON.stringify({ method, params, id: 1 }),
      });
      const reply = await response.json();
      if (reply.error) {
        const error = new Error(`${method}: ${reply.error.message} (${reply.error.code})`);
        (error as Error & { code?: number }).code = reply.error.code;
        throw error;
      }
      return reply.result;
    },
    close: async () => {
      if (closed) return;
      closed = true;
      notify();
      listener.close();
      for (const conn of conns) {
        try {
          conn.close();
        } catch {
          // already closed
        }
      }
      await acceptLoop;
      await Promise.allSettled([...serving]);
    },
  };
  return peer;
}

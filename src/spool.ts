/**
 * The durable spool: an append-only log of every datagram received, so that an outage of a
 * backend, or a crash of the collector, does not lose what left the kernel's queue.
 *
 * - Records get consecutive indices from 0 for the life of the spool directory. They are
 *   appended in frames (`spool_frame.ts`: one frame per receive), by the {@link SpoolWriter}
 *   on the receive thread, each frame with one `write(2)` to the current segment file. This
 *   class, on the main thread, learns of every frame from the writer's steps and
 *   keeps the index of them: it serves reads, positions, syncing and deletion.
 * - Records are datagrams as received, valid or not: the centre validates what it reads, and
 *   a reader's position passes an invalid record as soon as everything before it is confirmed.
 * - Written data reaches the page cache at once, so it survives the collector being killed;
 *   it is `fsync`'d every `fsyncIntervalMs` (0: the writer syncs every frame), which is what
 *   survives a power loss.
 * - Every reader (one per sink) has a position: the index of the first record it has not yet
 *   had confirmed. Positions are saved in `positions.json` (write and rename) on the same
 *   timer, and a segment is deleted once every reader is past it.
 * - The files never take more than `maxBytes`: when an append would pass it, the oldest
 *   segments are deleted even though a reader still needs them, and that reader's loss is
 *   counted and logged. A healthy sink never loses anything this way; only one that stayed
 *   away longer than the spool could hold.
 * - A write that fails (disk full, I/O error) keeps its frame in memory and is tried again
 *   before the next one, so indices stay contiguous and readers still get the records: the
 *   frame reaches this class in memory, and its place on disk later.
 *
 * Segment files are named by the index of their first record, so the next index survives a
 * restart even when every record has been delivered. A directory serves one collector at a
 * time: `open` takes a lock on it, which a second collector is refused.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { lockFile, unlockFile } from "../ffi/libc.ts";
import { RateLimitedLog } from "./log.ts";
import {
  decodeFrame,
  FRAME_HEADER_BYTES,
  frameCount,
  frameLength,
  type FrameRecord,
} from "./spool_frame.ts";
import { SpoolSignals } from "./spool_signals.ts";
import {
  type FrameLocation,
  segmentName,
  type SpoolWriterOptions,
  syncDirectory,
  type WriterStep,
} from "./spool_writer.ts";

const log = getLogger(["tbg", "spool"]);

const POSITIONS_FILE = "positions.json";
/** Positions are saved at least this often, whatever the fsync interval. */
const SAVE_INTERVAL_MS = 250;
/**
 * Share of `maxBytes` from which the spool counts as nearly full: it warns, and eviction of
 * events a sink has not confirmed is close.
 */
export const SPOOL_NEAR_FULL_SHARE = 0.8;
/** Below this share after a warning, the spool says it has room again. */
const RELIEVED = 0.5;

/** Options for {@link Spool.open}. */
export interface SpoolOptions {
  /** Directory of the segment files; created when missing. */
  readonly dir: string;
  /** Most bytes the segment files may take together. */
  readonly maxBytes: number;
  /** Longest time written data may wait for `fsync`; 0 syncs every frame. */
  readonly fsyncIntervalMs: number;
  /** Names of the readers; a reader new to the directory starts at its oldest record. */
  readonly readers: readonly string[];
  /** Size at which a new segment is started (default: an eighth of `maxBytes`, at most 64 MiB). */
  readonly segmentBytes?: number;
}

/** One record read back. */
export interface SpoolRecord extends FrameRecord {
  readonly index: number;
  /** Its frame no longer checks out on disk: the record stands for a datagram lost. */
  readonly damaged?: boolean;
}

/** What the spool holds, for stats and health. */
export interface SpoolStats {
  /** Bytes of the segment files, plus frames waiting to be written. */
  readonly bytes: number;
  readonly maxBytes: number;
  /** Index the next record gets. */
  readonly head: number;
  /** Index of the oldest record still held. */
  readonly tail: number;
  /** Per reader: records not yet confirmed. */
  readonly behind: Readonly<Record<string, number>>;
  /** Records that could not be written yet (kept in memory, not durable). */
  readonly unwritten: number;
}

interface Frame {
  /** Index of the frame's first record. */
  readonly index: number;
  readonly count: number;
  /** Where the frame starts in its segment file. */
  readonly offset: number;
}

interface Segment {
  readonly first: number;
  readonly path: string;
  count: number;
  bytes: number;
  readonly frames: Frame[];
}

interface UnwrittenFrame {
  readonly index: number;
  readonly bytes: number;
  readonly records: readonly FrameRecord[];
}

/** The append-only spool of accepted datagrams. */
export class Spool {
  readonly dir: string;
  readonly maxBytes: number;
  readonly #segmentBytes: number;
  readonly #fsyncIntervalMs: number;
  readonly #segments: Segment[];
  readonly #positions: Map<string, number>;
  #unwritten: UnwrittenFrame[] = [];
  #head: number;
  /** The newest segment, opened to sync what the writer put in it. */
  #syncFile: { segment: Segment; file: Deno.FsFile } | undefined;
  #readCache: { path: string; file: Deno.FsFile } | undefined;
  /** Segments written to since they were last synced; a new one also needs its directory. */
  readonly #unsynced = new Set<Segment>();
  #newSegment = false;
  #positionsChanged = true;
  #syncing: Promise<void> | undefined;
  #timer: ReturnType<typeof setInterval> | undefined;
  #nearFull = false;
  readonly #writeErrors = new RateLimitedLog(log);
  readonly #evictions = new RateLimitedLog(log);

  readonly #lock: number;
  /** Shared with the writer and the readers on other threads. */
  readonly signals: SpoolSignals;
  readonly #readers: readonly string[];

  private constructor(
    options: SpoolOptions,
    lock: number,
    segments: Segment[],
    positions: Map<string, number>,
    head: number,
  ) {
    this.#lock = lock;
    this.dir = options.dir;
    this.maxBytes = options.maxBytes;
    this.#segmentBytes = options.segmentBytes ??
      Math.max(64 * 1024, Math.min(64 * 1024 * 1024, Math.floor(options.maxBytes / 8)));
    this.#fsyncIntervalMs = options.fsyncIntervalMs;
    this.#segments = segments;
    this.#positions = positions;
    this.#head = head;
    this.#readers = options.readers;
    this.signals = new SpoolSignals(options.readers.length);
    this.signals.publishHead(head);
    this.signals.publishTail(this.tail);
    const interval = Math.min(SAVE_INTERVAL_MS, options.fsyncIntervalMs || SAVE_INTERVAL_MS);
    this.#timer = setInterval(() => void this.#sync(), interval);
    Deno.unrefTimer(this.#timer);
  }

  /**
   * Opens (or creates) the spool in `options.dir`, checking every segment: a frame cut short
   * by a crash at the end of the newest segment is removed.
   *
   * @throws {Error} naming the directory when it cannot be created, read or written
   */
  static open(options: SpoolOptions): Spool {
    try {
      Deno.mkdirSync(options.dir, { recursive: true, mode: 0o750 });
      const probe = `${options.dir}/.write-test`;
      Deno.writeFileSync(probe, new Uint8Array(0));
      Deno.removeSync(probe);
    } catch (error) {
      throw new Error(
        `spool directory ${options.dir} is not usable: ${(error as Error).message}; ` +
          `set SPOOL_DIR to a directory this user can write`,
      );
    }
    let lock: number;
    try {
      lock = lockFile(`${options.dir}/lock`);
    } catch (error) {
      throw new Error(
        `spool directory ${options.dir} is in use by another collector ` +
          `(${(error as Error).message}); give each collector a SPOOL_DIR of its own`,
      );
    }
    let spool: Spool;
    try {
      const { segments, next } = scanSegments(options.dir);
      const saved = readPositions(options.dir);
      const last = segments.at(-1);
      const tail = segments[0]?.first ?? 0;
      // With no segment left (all delivered, or the files removed by hand) continue after the
      // furthest position, so that no reader is ever ahead of the log.
      const head = last ? last.first + last.count : Math.max(next, ...saved.values());
      const positions = new Map<string, number>();
      for (const reader of options.readers) {
        const position = saved.get(reader) ?? tail;
        positions.set(reader, Math.min(Math.max(position, last ? tail : head), head));
      }
      spool = new Spool(options, lock, segments, positions, head);
    } catch (error) {
      unlockFile(lock);
      throw error;
    }
    const behind = options.readers.map((reader) =>
      `${reader} ${spool.head - spool.position(reader)}`
    );
    log.info("spool {dir}: {segments} segments, {bytes} bytes; to replay: {behind}", {
      dir: options.dir,
      segments: spool.#segments.length,
      bytes: spool.#bytes(),
      behind: behind.join(", "),
    });
    return spool;
  }

  /** Index the next record gets. */
  get head(): number {
    return this.#head;
  }

  /** Index of the oldest record still held. */
  get tail(): number {
    return this.#segments[0]?.first ?? this.#unwritten[0]?.index ?? this.#head;
  }

  /** Where `reader` acknowledges in {@link signals}. */
  readerIndex(reader: string): number {
    const index = this.#readers.indexOf(reader);
    if (index < 0) throw new Error(`unknown spool reader ${reader}`);
    return index;
  }

  /** A reader's position: the index of the first record it has not had confirmed. */
  position(reader: string): number {
    const position = this.#positions.get(reader);
    if (position === undefined) throw new Error(`unknown spool reader ${reader}`);
    return position;
  }

  /** What the {@link SpoolWriter} for this spool starts from. */
  writerOptions(): SpoolWriterOptions {
    return {
      dir: this.dir,
      head: this.#head,
      segmentBytes: this.#segmentBytes,
      syncEveryFrame: this.#fsyncIntervalMs === 0,
      signals: this.signals.buffer,
    };
  }

  /**
   * Applies what the writer did, in its order. `frames` are the appended frames' bytes back to
   * back, when they were handed over in memory; a frame the writer could not write needs them.
   *
   * @param writeError why the writer could not write the frames it kept
   */
  apply(steps: readonly WriterStep[], frames?: Uint8Array, writeError?: string): void {
    let offset = 0;
    for (const step of steps) {
      if (step.kind === "late") {
        const frame = this.#unwritten.shift();
        if (frame?.index !== step.location.index) {
          throw new Error(`spool frame ${step.location.index} placed out of order`);
        }
        this.#place(step.location, frame.records.length, frame.bytes);
        continue;
      }
      const note = step.note;
      const bytes = frames?.subarray(offset, offset + note.bytes);
      offset += note.bytes;
      if (note.index !== this.#head) {
        throw new Error(`spool frame ${note.index} noted where ${this.#head} was due`);
      }
      this.#head += note.count;
      if (note.location) {
        this.#place(note.location, note.count, note.bytes);
        continue;
      }
      const records = bytes && decodeFrame(bytes, false);
      if (!records) throw new Error(`spool frame ${note.index} is neither written nor handed over`);
      this.#unwritten.push({ index: note.index, bytes: note.bytes, records });
      this.#writeErrors.error(
        "cannot write to the spool in {dir} ({error}); {frames} batches kept in memory " +
          "and tried again with the next one: free disk space or fix the volume",
        { dir: this.dir, error: writeError ?? "unknown error", frames: this.#unwritten.length },
      );
    }
    this.#enforceLimit();
  }

  #place(location: FrameLocation, count: number, bytes: number): void {
    let segment = this.#segments.at(-1);
    if (segment?.first !== location.segment) {
      segment = {
        first: location.segment,
        path: `${this.dir}/${segmentName(location.segment)}`,
        count: 0,
        bytes: 0,
        frames: [],
      };
      this.#segments.push(segment);
      this.#newSegment = true;
    }
    segment.frames.push({ index: location.index, count, offset: location.offset });
    segment.count += count;
    segment.bytes += bytes;
    this.#unsynced.add(segment);
  }

  /**
   * Records from `from` on, in order, at most `maxRecords` of them and about `maxBytes`. A
   * `from` below the tail starts at the tail: those records were evicted.
   */
  read(from: number, maxRecords: number, maxBytes = 8 * 1024 * 1024): SpoolRecord[] {
    const out: SpoolRecord[] = [];
    let index = Math.max(from, this.tail);
    let bytes = 0;
    while (index < this.#head && out.length < maxRecords && bytes < maxBytes) {
      const records = this.#recordsOfFrameAt(index);
      if (!records) break;
      for (let i = index - records.index; i < records.list.length; i++) {
        if (out.length >= maxRecords || bytes >= maxBytes) break;
        const record = records.list[i];
        out.push({ index: records.index + i, ...record, damaged: records.damaged });
        bytes += record.bytes.length;
      }
      const next = out.length > 0 ? out[out.length - 1].index + 1 : index;
      if (next === index || next < records.index + records.list.length) break;
      index = next;
    }
    return out;
  }

  /** Moves a reader's position forward: every record before `index` was confirmed. */
  confirm(reader: string, index: number): void {
    const position = this.position(reader);
    if (index <= position) return;
    this.#positions.set(reader, Math.min(index, this.#head));
    this.#positionsChanged = true;
    this.#trim();
  }

  stats(): SpoolStats {
    const behind: Record<string, number> = {};
    for (const [reader, position] of this.#positions) behind[reader] = this.#head - position;
    return {
      bytes: this.#bytes(),
      maxBytes: this.maxBytes,
      head: this.#head,
      tail: this.tail,
      behind,
      unwritten: this.#unwritten.reduce((sum, frame) => sum + frame.records.length, 0),
    };
  }

  /** Syncs, saves positions and closes the files; call once the writer has stopped. */
  async close(): Promise<void> {
    clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#syncing;
    this.#syncNow();
    this.#syncFile?.file.close();
    this.#syncFile = undefined;
    this.#readCache?.file.close();
    this.#readCache = undefined;
    unlockFile(this.#lock);
  }

  #bytes(): number {
    let bytes = 0;
    for (const segment of this.#segments) bytes += segment.bytes;
    for (const frame of this.#unwritten) bytes += frame.bytes;
    return bytes;
  }

  /**
   * Deletes oldest segments until the files fit `maxBytes`. Readers still needing them move
   * to the new tail; a reader that had not even been handed those records counts the loss.
   */
  #enforceLimit(): void {
    let bytes = this.#bytes();
    if (bytes >= this.maxBytes * SPOOL_NEAR_FULL_SHARE && !this.#nearFull) {
      this.#nearFull = true;
      log.warn(
        "spool {dir} is {percent}% full ({bytes} of {max} bytes): a sink is away or slow; " +
          "at 100% its oldest undelivered events are dropped",
        {
          dir: this.dir,
          percent: Math.round((bytes / this.maxBytes) * 100),
          bytes,
          max: this.maxBytes,
        },
      );
    } else if (bytes < this.maxBytes * RELIEVED && this.#nearFull) {
      this.#nearFull = false;
      log.info("spool {dir} is below half full again", { dir: this.dir });
    }
    while (bytes > this.maxBytes && this.#segments.length > 1) {
      const oldest = this.#segments.shift()!;
      this.#removeSegment(oldest);
      bytes -= oldest.bytes;
      const tail = this.tail;
      const lagging: string[] = [];
      for (const [reader, position] of this.#positions) {
        if (position >= tail) continue;
        lagging.push(reader);
        this.#positions.set(reader, tail);
        this.#positionsChanged = true;
      }
      this.#evictions.error(
        "spool full ({max} bytes): deleted its oldest {count} events before {readers} " +
          "confirmed them; raise SPOOL_MAX_BYTES or bring the backend back",
        { max: this.maxBytes, count: oldest.count, readers: lagging.join(" and ") },
      );
    }
  }

  /** Deletes segments every reader is past (never the one being written). */
  #trim(): void {
    let lowest = this.#head;
    for (const position of this.#positions.values()) lowest = Math.min(lowest, position);
    while (this.#segments.length > 1) {
      const oldest = this.#segments[0];
      if (oldest.first + oldest.count > lowest) break;
      this.#segments.shift();
      this.#removeSegment(oldest);
    }
  }

  #removeSegment(segment: Segment): void {
    // Readers on other threads look at the tail before they open a segment.
    this.signals.publishTail(this.tail);
    if (this.#syncFile?.segment === segment) {
      this.#syncFile.file.close();
      this.#syncFile = undefined;
    }
    if (this.#readCache?.path === segment.path) {
      this.#readCache.file.close();
      this.#readCache = undefined;
    }
    try {
      Deno.removeSync(segment.path);
    } catch (error) {
      log.error("cannot delete spool segment {path}: {error}", {
        path: segment.path,
        error: (error as Error).message,
      });
    }
  }

  /** The records of the frame holding `index`, from memory or from its segment file. */
  #recordsOfFrameAt(
    index: number,
  ): { index: number; list: readonly FrameRecord[]; damaged?: boolean } | undefined {
    const unwritten = this.#unwritten.find((frame) =>
      frame.index <= index && index < frame.index + frame.records.length
    );
    if (unwritten) return { index: unwritten.index, list: unwritten.records };
    const segment = findLast(this.#segments, (s) => s.first <= index);
    if (!segment || index >= segment.first + segment.count) return undefined;
    const frame = findLast(segment.frames, (f) => f.index <= index)!;
    const bytes = this.#readAt(segment, frame);
    const list = decodeFrame(bytes);
    if (!list || list.length !== frame.count) {
      // Damaged on disk since it was written: hand out nothing rather than wrong data.
      log.error("spool frame at {path}:{offset} is damaged; its {count} events are skipped", {
        path: segment.path,
        offset: frame.offset,
        count: frame.count,
      });
      const empty = { bytes: new Uint8Array(0), truncated: false };
      return { index: frame.index, list: new Array(frame.count).fill(empty), damaged: true };
    }
    return { index: frame.index, list };
  }

  #readAt(segment: Segment, frame: Frame): Uint8Array {
    if (this.#readCache?.path !== segment.path) {
      this.#readCache?.file.close();
      this.#readCache = { path: segment.path, file: Deno.openSync(segment.path, { read: true }) };
    }
    const file = this.#readCache.file;
    const header = readExactly(file, frame.offset, FRAME_HEADER_BYTES);
    const payloadBytes = new DataView(header.buffer).getUint32(8, true);
    return readExactly(file, frame.offset, FRAME_HEADER_BYTES + payloadBytes);
  }

  async #sync(): Promise<void> {
    if (this.#syncing) return;
    this.#syncing = (async () => {
      try {
        for (const { file, close } of this.#takeUnsynced()) {
          try {
            await file.sync();
          } finally {
            close();
          }
        }
        this.#savePositions();
      } catch (error) {
        this.#writeErrors.error("spool sync failed in {dir}: {error}", {
          dir: this.dir,
          error: (error as Error).message,
        });
      } finally {
        this.#syncing = undefined;
      }
    })();
    await this.#syncing;
  }

  #syncNow(): void {
    try {
      for (const { file, close } of this.#takeUnsynced()) {
        try {
          file.syncSync();
        } finally {
          close();
        }
      }
      this.#savePositions();
    } catch (error) {
      this.#writeErrors.error("spool sync failed in {dir}: {error}", {
        dir: this.dir,
        error: (error as Error).message,
      });
    }
  }

  /**
   * Handles to sync for every segment written to since the last sync: the newest is kept
   * open for next time, an older one (the writer has moved on) is closed after. The writer's
   * data is synced through them, since `fsync` is a file's, not a descriptor's.
   */
  #takeUnsynced(): { file: Deno.FsFile; close: () => void }[] {
    if (this.#newSegment) {
      this.#newSegment = false;
      syncDirectory(this.dir);
    }
    const newest = this.#segments.at(-1);
    const out: { file: Deno.FsFile; close: () => void }[] = [];
    for (const segment of this.#unsynced) {
      if (!this.#segments.includes(segment)) continue;
      if (segment === newest) {
        if (this.#syncFile?.segment !== segment) {
          this.#syncFile?.file.close();
          this.#syncFile = { segment, file: Deno.openSync(segment.path, { read: true }) };
        }
        out.push({ file: this.#syncFile.file, close: () => {} });
      } else {
        const file = Deno.openSync(segment.path, { read: true });
        out.push({ file, close: () => file.close() });
      }
    }
    this.#unsynced.clear();
    return out;
  }

  #savePositions(): void {
    if (!this.#positionsChanged) return;
    this.#positionsChanged = false;
    const body = JSON.stringify({ version: 1, positions: Object.fromEntries(this.#positions) });
    const temporary = `${this.dir}/${POSITIONS_FILE}.tmp`;
    Deno.writeTextFileSync(temporary, body + "\n");
    Deno.renameSync(temporary, `${this.dir}/${POSITIONS_FILE}`);
  }
}

/**
 * The directory's segments, oldest first, and the index after the last record any of them
 * (even an empty one, which is deleted) accounts for.
 */
function scanSegments(dir: string): { segments: Segment[]; next: number } {
  const names = [...Deno.readDirSync(dir)]
    .filter((entry) => entry.isFile && /^[0-9]{16}\.spool$/.test(entry.name))
    .map((entry) => entry.name)
    .sort();
  const segments: Segment[] = [];
  let next = 0;
  for (const name of names) {
    const segment = scanSegment(`${dir}/${name}`, Number(name.slice(0, 16)));
    next = Math.max(next, segment.first + segment.count);
    if (segment.count === 0) {
      // Created just before a crash; a new segment with the same name replaces it.
      Deno.removeSync(segment.path);
      continue;
    }
    const previous = segments.at(-1);
    if (previous && previous.first + previous.count !== segment.first) {
      log.error(
        "spool segment {path} does not follow the one before it ({expected} expected); " +
          "the events between were lost",
        { path: segment.path, expected: previous.first + previous.count },
      );
    }
    segments.push(segment);
  }
  return { segments, next };
}

/**
 * Reads a segment's frames. A frame whose header and length are whole but whose CRC fails is
 * kept (reading it reports the damage); a frame cut short, as a crash mid-write leaves the
 * last one, is cut off with anything after it.
 */
function scanSegment(path: string, first: number): Segment {
  const data = Deno.readFileSync(path);
  const frames: Frame[] = [];
  let offset = 0;
  let index = first;
  for (let length = frameLength(data, offset); length > 0; length = frameLength(data, offset)) {
    const count = frameCount(data, offset);
    const end = offset + length;
    if (end > data.length) break;
    if (!decodeFrame(data.subarray(offset, end))) {
      log.error("spool segment {path}: the frame at byte {offset} is damaged", { path, offset });
    }
    frames.push({ index, count, offset });
    index += count;
    offset = end;
  }
  if (offset < data.length) {
    log.warn("spool segment {path}: {bytes} bytes after the last whole frame were cut off", {
      path,
      bytes: data.length - offset,
    });
    Deno.truncateSync(path, offset);
  }
  return { first, path, count: index - first, bytes: offset, frames };
}

function readPositions(dir: string): Map<string, number> {
  let text: string;
  try {
    text = Deno.readTextFileSync(`${dir}/${POSITIONS_FILE}`);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return new Map();
    throw error;
  }
  try {
    const parsed = JSON.parse(text) as { positions?: Record<string, unknown> };
    const positions = new Map<string, number>();
    for (const [reader, value] of Object.entries(parsed.positions ?? {})) {
      if (typeof value === "number" && Number.isSafeInteger(value) && value >= 0) {
        positions.set(reader, value);
      }
    }
    return positions;
  } catch {
    log.error("{path} is damaged; every reader replays the whole spool", {
      path: `${dir}/${POSITIONS_FILE}`,
    });
    return new Map();
  }
}

function readExactly(file: Deno.FsFile, offset: number, length: number): Uint8Array {
  const bytes = new Uint8Array(length);
  file.seekSync(offset, Deno.SeekMode.Start);
  let read = 0;
  while (read < length) {
    const n = file.readSync(bytes.subarray(read));
    if (n === null) break;
    read += n;
  }
  return bytes.subarray(0, read);
}

function findLast<T>(items: readonly T[], test: (item: T) => boolean): T | undefined {
  let low = 0;
  let high = items.length - 1;
  let found: T | undefined;
  while (low <= high) {
    const middle = (low + high) >> 1;
    if (test(items[middle])) {
      found = items[middle];
      low = middle + 1;
    } else {
      high = middle - 1;
    }
  }
  return found;
}

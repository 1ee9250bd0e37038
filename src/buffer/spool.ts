/**
 * The durable spool: an append-only log of every datagram received, so that an outage of a
 * backend, or a crash of the collector, does not lose what left the kernel's queue. This is
 * its ledger, on the main thread; the other parts run where they are needed:
 *
 * - `frame.ts`: the record format. One frame per receive, checked by CRC-32.
 * - `writer.ts`: the receive thread appends each frame with one `write(2)` and publishes the
 *   new head in `signals.ts`.
 * - `reader.ts`: each sink's thread reads the records from the files, and acknowledges in
 *   the signals how far its sink has confirmed.
 *
 * Design invariants:
 *
 * - Records get consecutive indices from 0 for the life of the spool directory. Segment files
 *   are named by the index of their first record, so the next index survives a restart even
 *   when every record has been delivered.
 * - Records are datagrams as received, valid or not: the centre validates what it reads, and
 *   a reader's position passes an invalid record as soon as everything before it is confirmed.
 * - Only the writer writes, only the ledger deletes, and never the newest segment (the one
 *   the writer may be writing). Before deleting, the ledger publishes the new tail, and a
 *   reader that finds its segment gone goes on at the tail.
 * - Written data reaches the page cache at once, so it survives the collector being killed;
 *   it is `fsync`'d every `fsyncIntervalMs` (0: the writer syncs every frame), which is what
 *   survives a power loss.
 * - Every reader (one per sink) has a position: the index of the first record it has not yet
 *   had confirmed. Positions are saved in `positions.json` (write and rename) on the same
 *   timer, and a segment is deleted once every reader is past it.
 * - The files take at most `maxBytes`, checked on that timer: past it the oldest segments are
 *   deleted even though a reader still needs them, and that reader's loss is counted and
 *   logged. A healthy sink never loses anything this way; only one that stayed away longer
 *   than the spool could hold.
 * - A write that fails (disk full, I/O error) keeps its frame in the writer's memory, tried
 *   again before the next one, so indices stay contiguous; readers get it once it is written.
 *
 * A directory serves one collector at a time: `open` takes a lock on it, which a second
 * collector is refused.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { lockFile, unlockFile } from "../../ffi/libc.ts";
import { RateLimitedLog } from "../ops/log.ts";
import { decodeFrame, frameCount, frameLength, type FrameRecord } from "./frame.ts";
import { SpoolReader } from "./reader.ts";
import { SpoolSignals } from "./signals.ts";
import { SEGMENT_FILE, type SpoolWriterOptions, syncDirectory } from "./writer.ts";

const log = getLogger(["tbg", "spool"]);

const POSITIONS_FILE = "positions.json";
/** The ledger looks at the files at least this often, whatever the fsync interval. */
const REFRESH_INTERVAL_MS = 250;
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
}

/** What the spool holds, for stats and health. */
export interface SpoolStats {
  /** Bytes of the segment files. */
  readonly bytes: number;
  readonly maxBytes: number;
  /** Index the next record gets. */
  readonly head: number;
  /** Index of the oldest record still held. */
  readonly tail: number;
  /** Per reader: records not yet confirmed. */
  readonly behind: Readonly<Record<string, number>>;
  /** Records the writer could not write yet (kept in memory, not durable). */
  readonly unwritten: number;
}

interface Segment {
  readonly first: number;
  readonly path: string;
  bytes: number;
  /** Bytes when it was last synced. */
  synced: number;
}

/** The spool's ledger. */
export class Spool {
  readonly dir: string;
  readonly maxBytes: number;
  /** Shared with the writer and the readers on other threads. */
  readonly signals: SpoolSignals;
  readonly #segmentBytes: number;
  readonly #fsyncIntervalMs: number;
  readonly #readers: readonly string[];
  #segments: Segment[];
  readonly #positions: Map<string, number>;
  #positionsChanged = true;
  #newSegment = false;
  /** The newest segment, opened to sync what the writer put in it. */
  #syncFile: { path: string; file: Deno.FsFile } | undefined;
  #syncing: Promise<void> | undefined;
  #timer: ReturnType<typeof setInterval> | undefined;
  #nearFull = false;
  readonly #lock: number;
  readonly #syncErrors = new RateLimitedLog(log);
  readonly #evictions = new RateLimitedLog(log);

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
    this.#readers = options.readers;
    this.signals = new SpoolSignals(options.readers.length);
    this.signals.publishHead(head);
    this.signals.publishTail(segments[0]?.first ?? head);
    const interval = Math.min(
      REFRESH_INTERVAL_MS,
      options.fsyncIntervalMs || REFRESH_INTERVAL_MS,
    );
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
      const ledger = segments.map(({ first, path, bytes }) => ({
        first,
        path,
        bytes,
        synced: bytes,
      }));
      spool = new Spool(options, lock, ledger, positions, head);
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

  /** Index the next record gets (records the writer holds unwritten included). */
  get head(): number {
    return this.signals.head() + this.signals.unwritten();
  }

  /** Index of the oldest record still held. */
  get tail(): number {
    return this.signals.tail();
  }

  /** What the {@link SpoolWriter} for this spool starts from. */
  writerOptions(): SpoolWriterOptions {
    return {
      dir: this.dir,
      head: this.signals.head(),
      segmentBytes: this.#segmentBytes,
      syncEveryFrame: this.#fsyncIntervalMs === 0,
      signals: this.signals.buffer,
    };
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

  /**
   * Records from `from` on, in order, at most `maxRecords` of them (read through a
   * {@link SpoolReader}, as a sink's thread reads them). A `from` below the tail starts at
   * the tail: those records were deleted.
   */
  read(from: number, maxRecords: number): SpoolRecord[] {
    const reader = new SpoolReader(this.dir, Math.max(from, this.tail), this.signals);
    try {
      const out: SpoolRecord[] = [];
      while (out.length < maxRecords) {
        const records = reader.read(maxRecords - out.length);
        if (records.length === 0) break;
        for (const record of records) out.push(record);
      }
      return out;
    } finally {
      reader.close();
    }
  }

  /** Moves a reader's position forward: every record before `index` was confirmed. */
  confirm(reader: string, index: number): void {
    const position = this.position(reader);
    if (index <= position) return;
    this.#positions.set(reader, Math.min(index, this.head));
    this.#positionsChanged = true;
    this.#trim();
  }

  /**
   * Looks at the files now: takes in the segments the writer started, deletes those every
   * reader is past, and the oldest when the files pass `maxBytes`. Runs on the ledger's
   * timer; call it to have that happen at once.
   */
  refresh(): void {
    this.#scan();
    this.#trim();
    this.#enforceLimit();
  }

  stats(): SpoolStats {
    const head = this.head;
    const behind: Record<string, number> = {};
    for (const [reader, position] of this.#positions) behind[reader] = head - position;
    return {
      bytes: this.#bytes(),
      maxBytes: this.maxBytes,
      head,
      tail: this.tail,
      behind,
      unwritten: this.signals.unwritten(),
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
    unlockFile(this.#lock);
  }

  #bytes(): number {
    let bytes = 0;
    for (const segment of this.#segments) bytes += segment.bytes;
    return bytes;
  }

  /** Takes the directory's segments and their sizes as they are now. */
  #scan(): void {
    const known = new Map(this.#segments.map((segment) => [segment.first, segment]));
    const segments: Segment[] = [];
    for (const entry of Deno.readDirSync(this.dir)) {
      const match = SEGMENT_FILE.exec(entry.name);
      if (!entry.isFile || !match) continue;
      const first = Number(match[1]);
      const path = `${this.dir}/${entry.name}`;
      let bytes: number;
      try {
        bytes = Deno.statSync(path).size;
      } catch {
        continue; // deleted meanwhile
      }
      const segment = known.get(first) ?? { first, path, bytes: 0, synced: 0 };
      if (!known.has(first)) this.#newSegment = true;
      segment.bytes = bytes;
      segments.push(segment);
    }
    this.#segments = segments.sort((a, b) => a.first - b.first);
  }

  /**
   * Deletes oldest segments until the files fit `maxBytes`. Readers still needing them move
   * to the new tail (their threads count the loss); the log names them.
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
      const oldest = this.#segments[0];
      const count = this.#segments[1].first - oldest.first;
      this.#removeOldest();
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
        { max: this.maxBytes, count, readers: lagging.join(" and ") },
      );
    }
  }

  /** Deletes segments every reader is past (never the newest). */
  #trim(): void {
    let lowest = this.head;
    for (const position of this.#positions.values()) lowest = Math.min(lowest, position);
    while (this.#segments.length > 1 && this.#segments[1].first <= lowest) this.#removeOldest();
  }

  #removeOldest(): void {
    const segment = this.#segments.shift()!;
    // Readers on other threads look at the tail before they open a segment.
    this.signals.publishTail(this.#segments[0].first);
    if (this.#syncFile?.path === segment.path) {
      this.#syncFile.file.close();
      this.#syncFile = undefined;
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

  /** The timer's work: look at the files, sync what grew (off this thread), save positions. */
  async #sync(): Promise<void> {
    if (this.#syncing) return;
    this.#syncing = this.#syncWith((file) => file.sync()).finally(() => this.#syncing = undefined);
    await this.#syncing;
  }

  /** The same at once, on this thread (at close). */
  #syncNow(): void {
    void this.#syncWith((file) => file.syncSync());
  }

  /**
   * Syncs every segment that grew with `sync`, then saves positions; failures are logged. A
   * `sync` that returns nothing keeps all of it synchronous.
   */
  async #syncWith(sync: (file: Deno.FsFile) => Promise<void> | void): Promise<void> {
    try {
      this.refresh();
      for (const { file, close } of this.#takeUnsynced()) {
        try {
          const pending = sync(file);
          if (pending) await pending;
        } finally {
          close();
        }
      }
      this.#savePositions();
    } catch (error) {
      this.#syncErrors.error("spool sync failed in {dir}: {error}", {
        dir: this.dir,
        error: (error as Error).message,
      });
    }
  }

  /**
   * Handles to sync for every segment that grew since its last sync: the newest is kept open
   * for next time, an older one (the writer has moved on) is closed after. The writer's data
   * is synced through them, since `fsync` is a file's, not a descriptor's.
   */
  #takeUnsynced(): { file: Deno.FsFile; close: () => void }[] {
    if (this.#newSegment) {
      this.#newSegment = false;
      syncDirectory(this.dir);
    }
    const newest = this.#segments.at(-1);
    const out: { file: Deno.FsFile; close: () => void }[] = [];
    for (const segment of this.#segments) {
      if (segment.bytes === segment.synced) continue;
      segment.synced = segment.bytes;
      try {
        if (segment === newest) {
          if (this.#syncFile?.path !== segment.path) {
            this.#syncFile?.file.close();
            this.#syncFile = { path: segment.path, file: Deno.openSync(segment.path) };
          }
          out.push({ file: this.#syncFile.file, close: () => {} });
        } else {
          const file = Deno.openSync(segment.path);
          out.push({ file, close: () => file.close() });
        }
      } catch (error) {
        if (!(error instanceof Deno.errors.NotFound)) throw error;
      }
    }
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

interface ScannedSegment {
  readonly first: number;
  readonly path: string;
  readonly count: number;
  readonly bytes: number;
}

/**
 * The directory's segments, oldest first, and the index after the last record any of them
 * (even an empty one, which is deleted) accounts for.
 */
function scanSegments(dir: string): { segments: ScannedSegment[]; next: number } {
  const names = [...Deno.readDirSync(dir)]
    .filter((entry) => entry.isFile && SEGMENT_FILE.test(entry.name))
    .map((entry) => entry.name)
    .sort();
  const segments: ScannedSegment[] = [];
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
function scanSegment(path: string, first: number): ScannedSegment {
  const data = Deno.readFileSync(path);
  let offset = 0;
  let index = first;
  for (let length = frameLength(data, offset); length > 0; length = frameLength(data, offset)) {
    const count = frameCount(data, offset);
    const end = offset + length;
    if (end > data.length) break;
    if (!decodeFrame(data.subarray(offset, end))) {
      log.error("spool segment {path}: the frame at byte {offset} is damaged", { path, offset });
    }
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
  return { first, path, count: index - first, bytes: offset };
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

import assert from "node:assert/strict";
import { REORDER_WINDOW, SeqTracker } from "../src/seq_tracker.ts";

function observeAll(tracker: SeqTracker, emitter: string, seqs: number[]) {
  for (const seq of seqs) tracker.observe(emitter, seq);
}

Deno.test("no gaps, no loss", () => {
  const tracker = new SeqTracker();
  observeAll(tracker, "a", [1, 2, 3, 4, 5]);
  assert.equal(tracker.lost, 0);
});

Deno.test("gaps are counted", () => {
  const tracker = new SeqTracker();
  observeAll(tracker, "a", [1, 2, 5, 6, 10]);
  assert.equal(tracker.lost, 5);
});

Deno.test("numbers before the first one seen are not counted as lost", () => {
  const tracker = new SeqTracker();
  observeAll(tracker, "a", [4711, 4712, 4713]);
  assert.equal(tracker.lost, 0);
});

Deno.test("late arrivals fill their gap", () => {
  const tracker = new SeqTracker();
  observeAll(tracker, "a", [1, 3, 4]);
  assert.equal(tracker.lost, 1);
  tracker.observe("a", 2);
  assert.equal(tracker.lost, 0);
  observeAll(tracker, "a", [6, 5]);
  assert.equal(tracker.lost, 0);
});

Deno.test("emitters are counted separately", () => {
  const tracker = new SeqTracker();
  observeAll(tracker, "a", [1, 2, 3]);
  observeAll(tracker, "b", [1, 3]);
  assert.equal(tracker.lost, 1);
});

Deno.test("a restart keeps the loss counted before it and starts afresh", () => {
  const tracker = new SeqTracker();
  const start = REORDER_WINDOW * 3;
  observeAll(tracker, "a", [start, start + 2]);
  assert.equal(tracker.lost, 1);
  observeAll(tracker, "a", [1, 2, 4]);
  assert.equal(tracker.restarts, 1);
  assert.equal(tracker.lost, 2);
});

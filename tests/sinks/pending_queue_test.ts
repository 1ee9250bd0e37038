import * as assert from "node:assert/strict";
import { PendingQueue } from "../../src/sinks/pending_queue.ts";

Deno.test("a pending queue acknowledges a push's end once all its items and all before them are removed", () => {
  const acks: number[] = [];
  const queue = new PendingQueue<string>((position) => acks.push(position));
  queue.push(["a", "b", "c"], 4); // a record that is not an event follows them
  queue.push([], 6); // a read with no events at all
  queue.push(["d"], 7);
  assert.deepEqual(acks, [], "nothing is acknowledged before its items leave");

  queue.remove(2);
  assert.deepEqual(acks, [], "part of a push is not its end");
  queue.remove(1);
  assert.deepEqual(acks, [6], "the push, and the empty one after it");
  queue.remove(1);
  assert.deepEqual(acks, [6, 7]);

  queue.push([], 9);
  assert.deepEqual(acks, [6, 7, 9], "nothing ahead of it: acknowledged at once");
  assert.equal(queue.length, 0);
});

Deno.test("a pending queue acknowledges in order across many pushes, whatever the removals' sizes", () => {
  const acks: number[] = [];
  const queue = new PendingQueue<number>((position) => acks.push(position));
  let end = 0;
  const ends: number[] = [];
  for (let push = 0; push < 5_000; push++) {
    const size = push % 7;
    queue.push(Array.from({ length: size }, (_, i) => i), end += size + (push % 3));
    ends.push(end);
  }
  while (queue.length > 0) queue.remove(1 + (queue.removed % 13));
  assert.equal(acks.at(-1), end, "the last push's end, once everything left");
  assert.ok(acks.every((position, i) => i === 0 || position > acks[i - 1]), "only forward");
  assert.ok(acks.every((position) => ends.includes(position)), "only ends of pushes");
});

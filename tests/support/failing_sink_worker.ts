/**
 * Worker module for tests: a sink thread whose sink cannot be built, as when a sink's
 * module throws at start-up.
 *
 * @module
 */
import { serveSinkThread } from "../../src/sinks/thread.ts";

serveSinkThread(() => {
  throw new Error("this sink cannot start");
});

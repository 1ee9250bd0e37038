/**
 * Worker module: the Redis sink on a thread of its own (see `../thread.ts`).
 *
 * @module
 */
import { createRedisSink } from "./sink.ts";
import { serveSinkThread } from "../thread.ts";

serveSinkThread(createRedisSink);

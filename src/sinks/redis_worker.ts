/**
 * Worker module: the Redis sink on a thread of its own (see `threaded.ts`).
 *
 * @module
 */
import { createRedisSink } from "./redis.ts";
import { serveSinkThread } from "./threaded.ts";

serveSinkThread(createRedisSink);

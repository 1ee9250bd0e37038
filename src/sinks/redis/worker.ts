/**
 * Worker module: the Redis sink on a thread of its own (see `../thread.ts`). Over plain TCP
 * it is one blocking loop that reads the spool itself (`blocking.ts`); over TLS (`rediss://`),
 * which has no blocking path, the event-loop sink (`sink.ts`) fed from the spool.
 *
 * @module
 */
import { BlockingRedisSink } from "./blocking.ts";
import { createRedisSink, type RedisSinkOptions } from "./sink.ts";
import { feedSink, serveSpoolSinkThread } from "../thread.ts";

serveSpoolSinkThread((options: RedisSinkOptions, place) =>
  new URL(options.url).protocol === "redis:"
    ? new BlockingRedisSink(options, place)
    : feedSink((acknowledge) => createRedisSink(options, acknowledge), place)
);

/**
 * Worker module: the PostgreSQL sink on a thread of its own (see `threaded.ts`).
 *
 * @module
 */
import { createPostgresSink } from "./postgres.ts";
import { serveSinkThread } from "./threaded.ts";

serveSinkThread(createPostgresSink);

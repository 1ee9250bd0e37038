/**
 * Worker module: the PostgreSQL sink on a thread of its own (see `../thread.ts`).
 *
 * @module
 */
import { createPostgresSink } from "./sink.ts";
import { serveSinkThread } from "../thread.ts";

serveSinkThread(createPostgresSink);

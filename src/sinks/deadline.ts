/**
 * Deadlines for a sink's round trips to its backend. A backend that accepts a connection and
 * never answers (a frozen server, a half-open link, a listener that is not the database) must
 * cost a sink one deadline, not an outage: the sink gives up on the connection, throws it
 * away and starts over with a new one.
 *
 * @module
 */

/** Thrown when a round trip took longer than its deadline. */
export class DeadlineExceeded extends Error {
  constructor(what: string, ms: number) {
    super(`${what} timed out after ${ms} ms`);
    this.name = "DeadlineExceeded";
  }
}

/**
 * Settles like `work`, unless `ms` pass first: then `onExpire` runs (it should tear down
 * whatever `work` waits on) and the result rejects with {@link DeadlineExceeded}. `work` is
 * abandoned, not awaited: a driver whose promise never settles cannot hold the caller.
 */
export function withDeadline<T>(
  work: Promise<T>,
  ms: number,
  what: string,
  onExpire: () => void = () => {},
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      try {
        onExpire();
      } finally {
        reject(new DeadlineExceeded(what, ms));
      }
    }, ms);
  });
  work.catch(() => {}); // a late failure of abandoned work is not an unhandled rejection
  return Promise.race([work, expired]).finally(() => clearTimeout(timer));
}

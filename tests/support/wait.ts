/**
 * Waiting on conditions with a deadline, so no test sleeps for luck.
 *
 * @module
 */

/** Options for {@link waitFor}. */
export interface WaitOptions {
  /** Give up after this many milliseconds. */
  timeoutMs?: number;
  /** Pause between checks, in milliseconds. */
  intervalMs?: number;
  /** Describes the condition in the timeout error. */
  what?: string;
}

/**
 * Calls `check` until it returns a value other than `undefined`, `false` or `null`, and
 * returns that value; throws once the deadline passes, with the last error seen.
 */
export async function waitFor<T>(
  check: () => T | Promise<T>,
  { timeoutMs = 10_000, intervalMs = 20, what = "condition" }: WaitOptions = {},
): Promise<Exclude<T, false | null | undefined>> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  while (true) {
    try {
      const value = await check();
      if (value !== undefined && value !== false && value !== null) {
        return value as Exclude<T, false | null | undefined>;
      }
    } catch (error) {
      lastError = error;
    }
    if (Date.now() > deadline) {
      const cause = lastError instanceof Error ? `: ${lastError.message}` : "";
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${cause}`);
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

/**
 * What a failed write means for the next attempt: the PostgreSQL sink's retry policy, kept
 * apart from the loop that follows it.
 *
 * - `data`: the server refused the data (SQLSTATE class 22 or 54), or it could not be
 *   encoded; the same batch fails the same way, so it is split until the event is alone.
 * - `uncertain`: the connection broke after every statement succeeded; whether the commit
 *   happened is asked of the server (`pg_xact_status`) before anything is sent again.
 * - `transient`: anything else (refused or broken connection, a server shutting down, a
 *   deadline): the connection is thrown away and the batch is sent again after a back-off.
 *
 * @module
 */

/** Thrown when a commit's outcome is unknown: the connection broke after the statements. */
export class UncertainCommit extends Error {
  constructor(readonly xid: string, cause: unknown) {
    super(errorText(cause), { cause });
  }
}

/** A batch that could not be turned into statements; handled like data the server refused. */
export class UnencodableBatch extends Error {}

/** How a failed write is handled. */
export type FailureKind = "data" | "uncertain" | "transient";

/** The kind of a write's failure (see the module doc). */
export function failureKind(error: unknown): FailureKind {
  if (error instanceof UncertainCommit) return "uncertain";
  return isDataError(error) ? "data" : "transient";
}

/** An error caused by the data sent: retrying the same data fails the same way. */
export function isDataError(error: unknown): boolean {
  if (error instanceof UnencodableBatch) return true;
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" && /^(22|54)[0-9A-Z]{3}$/.test(code);
}

/** SQLSTATE unique_violation: a row with the same event id and time is stored already. */
export function isUniqueViolation(error: unknown): boolean {
  return (error as { code?: unknown } | null)?.code === "23505";
}

/** An error as one line, with its SQLSTATE when the message lacks it. */
export function errorText(error: unknown): string {
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code;
    return typeof code === "string" && !error.message.includes(code)
      ? `${error.message} (${code})`
      : error.message;
  }
  return String(error);
}

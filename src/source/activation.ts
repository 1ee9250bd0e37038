/**
 * Socket activation (`sd_listen_fds`): the descriptor a service manager passed in for the
 * event socket, if any. systemd passes descriptors from 3 on and says how many in
 * `LISTEN_FDS`, for which process in `LISTEN_PID`, and their names in `LISTEN_FDNAMES`
 * (`FileDescriptorName=` of the socket unit, colon-separated).
 *
 * @module
 */

/** First descriptor passed (`SD_LISTEN_FDS_START`). */
const LISTEN_FDS_START = 3;

/** The name the collector's socket unit gives its socket (`FileDescriptorName=events`). */
export const EVENTS_FD_NAME = "events";

/**
 * The descriptor of the event socket passed to this process, or undefined when none was
 * (no `LISTEN_FDS`, or variables meant for another process: `LISTEN_PID` is not ours).
 * With several descriptors, the one named {@link EVENTS_FD_NAME} is taken. Throws, naming
 * the variable, when the variables are there but make no sense.
 */
export function passedEventSocket(
  env: Readonly<Record<string, string | undefined>>,
  pid: number,
): number | undefined {
  const count = env.LISTEN_FDS;
  if (count === undefined || count === "") return undefined;
  if (env.LISTEN_PID !== String(pid)) return undefined;
  if (!/^[1-9][0-9]{0,3}$/.test(count)) {
    throw new Error(`LISTEN_FDS must be a count of descriptors, got ${JSON.stringify(count)}`);
  }
  const fds = Number(count);
  const names = env.LISTEN_FDNAMES?.split(":");
  if (fds === 1) return LISTEN_FDS_START;
  const index = names?.indexOf(EVENTS_FD_NAME) ?? -1;
  if (index < 0 || index >= fds) {
    throw new Error(
      `LISTEN_FDS passes ${fds} descriptors and LISTEN_FDNAMES names none of them ` +
        `"${EVENTS_FD_NAME}": set FileDescriptorName=${EVENTS_FD_NAME} in the socket unit`,
    );
  }
  return LISTEN_FDS_START + index;
}

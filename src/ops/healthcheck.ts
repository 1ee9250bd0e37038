/**
 * `tbg-collector healthcheck`: asks a running collector's `/healthz` and turns the answer
 * into an exit code, so a container health check needs no curl in the image.
 *
 * @module
 */
import type { Config } from "./config.ts";

/** Outcome of one probe. */
export interface ProbeResult {
  readonly healthy: boolean;
  /** One line for the health check's log. */
  readonly message: string;
}

/**
 * The `/healthz` URL of the collector configured by `config`, as seen from the same host: a
 * wildcard listen address is reached through loopback. Undefined when the server is off.
 */
export function healthUrl(config: Pick<Config, "metricsHost" | "metricsPort">): string | undefined {
  if (config.metricsPort === 0) return undefined;
  let host = config.metricsHost;
  if (host === "0.0.0.0") host = "127.0.0.1";
  else if (host === "::" || host === "[::]") host = "[::1]";
  else if (host.includes(":") && !host.startsWith("[")) host = `[${host}]`;
  return `http://${host}:${config.metricsPort}/healthz`;
}

/** Fetches `url` once; healthy only on a 200 answer. */
export async function probeHealth(url: string, timeoutMs = 5_000): Promise<ProbeResult> {
  let response: Response;
  try {
    response = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  } catch (error) {
    const why = error instanceof DOMException && error.name === "TimeoutError"
      ? `no answer within ${timeoutMs} ms`
      : (error as Error).message;
    return { healthy: false, message: `unhealthy: cannot reach ${url}: ${why}` };
  }
  const body = await response.text().catch(() => "");
  let reasons: string[] = [];
  try {
    const parsed = JSON.parse(body);
    if (Array.isArray(parsed?.reasons)) reasons = parsed.reasons.map(String);
  } catch {
    // not the collector's JSON: the status alone decides
  }
  if (response.status === 200) return { healthy: true, message: "healthy" };
  const detail = reasons.length > 0 ? reasons.join("; ") : body.trim().slice(0, 500);
  return {
    healthy: false,
    message: `unhealthy (HTTP ${response.status})${detail ? `: ${detail}` : ""}`,
  };
}

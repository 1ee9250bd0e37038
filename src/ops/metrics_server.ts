/**
 * The HTTP endpoints an orchestrator and a scraper read: `GET /healthz` (JSON, 200 when
 * healthy, 503 otherwise) and `GET /metrics` (Prometheus text format 0.0.4). The server only
 * renders what it is given; what healthy means is decided by the caller.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";

const log = getLogger(["tbg", "metrics"]);

/** Content type of the Prometheus text exposition format. */
export const METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/** What `/healthz` answers; any further fields are sent as they are, in the JSON body. */
export interface HealthReport {
  readonly healthy: boolean;
  /** Why it is not healthy, one sentence each; empty when healthy. */
  readonly reasons: readonly string[];
}

/** Options for {@link startMetricsServer}. */
export interface MetricsServerOptions {
  /** Address to listen on, e.g. `0.0.0.0` or `127.0.0.1`. */
  readonly host: string;
  /** TCP port; 0 takes a free one (see {@link MetricsServer.port}). */
  readonly port: number;
  /** Renders the metrics; called on every scrape. */
  readonly metrics: () => string;
  /** Works out health; called on every probe. */
  readonly health: () => HealthReport;
}

/** A listening metrics server. */
export interface MetricsServer {
  readonly host: string;
  /** The port it listens on. */
  readonly port: number;
  /** Stops accepting connections and waits for requests in progress. */
  shutdown(): Promise<void>;
}

/** The server could not listen; the message names `METRICS_PORT`. */
export class MetricsServerError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "MetricsServerError";
  }
}

const JSON_TYPE = "application/json; charset=utf-8";
const TEXT_TYPE = "text/plain; charset=utf-8";

function answer(status: number, body: string, type: string, head: boolean): Response {
  // Probes must see the state of now, never a cached answer.
  const headers = { "content-type": type, "cache-control": "no-store" };
  return new Response(head ? null : body, { status, headers });
}

/** Answers one request; exported for tests that need no socket. */
export function handleMetricsRequest(
  request: Request,
  options: Pick<MetricsServerOptions, "metrics" | "health">,
): Response {
  const path = new URL(request.url).pathname;
  if (path !== "/metrics" && path !== "/healthz") {
    return answer(404, "not found: try /metrics or /healthz\n", TEXT_TYPE, false);
  }
  const head = request.method === "HEAD";
  if (request.method !== "GET" && !head) {
    const response = answer(405, "method not allowed\n", TEXT_TYPE, false);
    response.headers.set("allow", "GET, HEAD");
    return response;
  }
  if (path === "/metrics") {
    try {
      return answer(200, options.metrics(), METRICS_CONTENT_TYPE, head);
    } catch (error) {
      log.error("cannot render metrics: {error}", { error: (error as Error).message });
      return answer(500, "cannot render metrics\n", TEXT_TYPE, head);
    }
  }
  let report: HealthReport;
  try {
    report = options.health();
  } catch (error) {
    const reason = `cannot work out health: ${(error as Error).message}`;
    log.error("{reason}", { reason });
    report = { healthy: false, reasons: [reason] };
  }
  return answer(report.healthy ? 200 : 503, `${JSON.stringify(report)}\n`, JSON_TYPE, head);
}

/**
 * Starts listening at once: a port that is taken or not allowed throws here, so start-up
 * stops with a message naming `METRICS_PORT` rather than running without health checks.
 *
 * @throws {MetricsServerError} when the server cannot listen
 */
export function startMetricsServer(options: MetricsServerOptions): MetricsServer {
  let server: Deno.HttpServer<Deno.NetAddr>;
  try {
    server = Deno.serve({
      hostname: options.host,
      port: options.port,
      onListen: () => {}, // logged below through LogTape instead of Deno's console line
      onError: (error) => {
        log.error("metrics request failed: {error}", { error: (error as Error)?.message });
        return new Response("internal error\n", { status: 500 });
      },
    }, (request) => handleMetricsRequest(request, options));
  } catch (error) {
    const why = error instanceof Deno.errors.AddrInUse
      ? "another process has that port; choose a free METRICS_PORT, or 0 to turn the server off"
      : "set METRICS_PORT and METRICS_HOST to an address this process may listen on, or " +
        "METRICS_PORT=0 to turn the server off";
    throw new MetricsServerError(
      `cannot listen on ${options.host}:${options.port} (METRICS_PORT) for /metrics and ` +
        `/healthz: ${(error as Error).message}; ${why}`,
      { cause: error },
    );
  }
  const port = server.addr.port;
  log.info("serving /metrics and /healthz on {host}:{port}", { host: options.host, port });
  let stopping: Promise<void> | undefined;
  return {
    host: options.host,
    port,
    shutdown: () => stopping ??= server.shutdown(),
  };
}

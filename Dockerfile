# syntax=docker/dockerfile:1
#
# The event collector as one self-contained binary (deno compile) in a small runtime image.
# Build from the repository root: docker build -t tbg/event-collector .

FROM denoland/deno:bin-2.9.6 AS deno

FROM debian:bookworm-slim AS build
COPY --from=deno /deno /usr/local/bin/deno
WORKDIR /app
COPY deno.json deno.lock ./
COPY main.ts ./
COPY src/ src/
COPY ffi/ ffi/
RUN deno task compile

FROM debian:bookworm-slim
# glibc's libc.so.6 (for the FFI socket shim) is in the base image; nothing else is needed.
RUN groupadd --system --gid 1000 ckpool-events \
	&& useradd --system --uid 10001 --gid ckpool-events --no-create-home \
		--shell /usr/sbin/nologin collector \
	&& mkdir -p /tmp/ckpool \
	&& chown collector:ckpool-events /tmp/ckpool \
	&& chmod 2770 /tmp/ckpool \
	&& mkdir -p /var/lib/tbg-collector/spool \
	&& chown -R collector:ckpool-events /var/lib/tbg-collector \
	&& chmod 0700 /var/lib/tbg-collector/spool
COPY --from=build /app/dist/tbg-collector /usr/local/bin/tbg-collector
# An empty named volume mounted on the spool directory takes its owner and mode from here.
VOLUME /var/lib/tbg-collector/spool
# /healthz and /metrics (METRICS_PORT); `tbg-collector healthcheck` asks the first.
EXPOSE 9464
HEALTHCHECK --interval=10s --timeout=5s --retries=3 --start-period=60s \
	CMD ["/usr/local/bin/tbg-collector", "healthcheck"]
USER collector:ckpool-events
ENTRYPOINT ["/usr/local/bin/tbg-collector"]

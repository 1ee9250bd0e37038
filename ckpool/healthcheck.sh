#!/usr/bin/env bash
# ckpool's health check: healthy when its own control socket answers "ping" with "pong"
# (ckpmsg, the client ckpool ships) and its Stratum port answers a mining.subscribe.
# CKPOOL_SOCKET_DIR (default /var/run/ckpool, ckpool's -s), STRATUM_PORT (default 3333) and
# CKPMSG (default ckpmsg) say where to look.
set -euo pipefail

socket_dir=${CKPOOL_SOCKET_DIR:-/var/run/ckpool}
port=${STRATUM_PORT:-3333}

socket_dir=${socket_dir%/}
# ckpool -s DIR listens on DIR/listener; ckpmsg asks <-s>/<-n>/listener.
# ckpmsg exits 0 whatever happened; its log line says whether ckpool answered.
reply=$(printf 'ping\n' | timeout 5 "${CKPMSG:-ckpmsg}" -s "$(dirname "$socket_dir")" \
	-n "$(basename "$socket_dir")" -t 3 -T 3 2>&1 || true)
if ! grep -q 'Received response: pong' <<<"$reply"; then
	echo "unhealthy: ckpool does not answer ping on $socket_dir/listener: ${reply:-no reply}" >&2
	exit 1
fi
if ! exec 3<>"/dev/tcp/127.0.0.1/$port"; then
	echo "unhealthy: nothing accepts Stratum connections on port $port" >&2
	exit 1
fi
printf '%s\n' '{"id":1,"method":"mining.subscribe","params":["tbg-healthcheck"]}' >&3
line=""
read -r -t 5 line <&3 || true
if [[ $line != *'"result"'* ]]; then
	echo "unhealthy: port $port took the connection but did not answer mining.subscribe" >&2
	exit 1
fi
echo "healthy: ckpool answers ping and mining.subscribe"

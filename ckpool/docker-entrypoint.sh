#!/bin/sh
# Renders ckpool's configuration from the environment, then runs ckpool with it.
#
# The config template holds ${BITCOIN_RPC_USER} and ${BITCOIN_RPC_PASSWORD} where the bitcoind
# credentials go; they are replaced by the variables' values, escaped for JSON, so no secret
# is baked into the image. Arguments are passed on to ckpool (-B, -s, ...).
#
# Copyright (C) 2026 TheBitcoinGame. GPLv3, see /usr/share/doc/tbg-ckpool/LICENSE.
set -eu

template=${CKPOOL_CONFIG_TEMPLATE:-/etc/ckpool/ckpool-signet.conf}
rendered=${CKPOOL_CONFIG:-/var/lib/ckpool/ckpool.conf}

: "${BITCOIN_RPC_USER:?set BITCOIN_RPC_USER to bitcoind's RPC user (compose reads it from .env)}"
: "${BITCOIN_RPC_PASSWORD:?set BITCOIN_RPC_PASSWORD to bitcoind's RPC password (compose reads it from .env)}"

if [ ! -r "$template" ]; then
	echo "ckpool config template $template is missing or unreadable; mount one there or set CKPOOL_CONFIG_TEMPLATE" >&2
	exit 1
fi

# ENVIRON, not -v: awk would interpret backslashes in -v values.
awk '
function json_escape(s,    out, i, c) {
	out = ""
	for (i = 1; i <= length(s); i++) {
		c = substr(s, i, 1)
		if (c == "\\" || c == "\"")
			out = out "\\" c
		else
			out = out c
	}
	return out
}
function replace_all(line, token, value,    out, at) {
	out = ""
	while ((at = index(line, token)) > 0) {
		out = out substr(line, 1, at - 1) value
		line = substr(line, at + length(token))
	}
	return out line
}
{
	line = replace_all($0, "${BITCOIN_RPC_USER}", json_escape(ENVIRON["BITCOIN_RPC_USER"]))
	print replace_all(line, "${BITCOIN_RPC_PASSWORD}", json_escape(ENVIRON["BITCOIN_RPC_PASSWORD"]))
}' "$template" >"$rendered.tmp"
chmod 600 "$rendered.tmp"
mv "$rendered.tmp" "$rendered"

exec ckpool -c "$rendered" "$@"

#!/usr/bin/env bash
# TheBitcoinGame ckpool patch kit: turns an upstream ckpool checkout into the
# event-emitting ckpool TheBitcoinGame runs.
#
# Copyright 2025 TheBitcoinGame contributors
# This program is free software; you can redistribute it and/or modify it
# under the terms of the GNU General Public License as published by the Free
# Software Foundation; either version 3 of the License, or (at your option)
# any later version.
#
# Usage: apply-patches.sh [--check] CKPOOL_DIR
#
#   1. Checks that the four files the kit edits match UPSTREAM.lock
#      (TBG_SKIP_VERIFY=1 skips this, with a warning).
#   2. Locates every anchor; each must occur exactly as often as expected.
#   3. Only then writes: the four edited files and src/tbg_events.[ch].
# On any failure the tree is left as it was. --check stops after step 2.
# A tree this kit already patched is left alone (exit 0); a tree patched by
# another version of the kit is refused.
set -euo pipefail
export LC_ALL=C

KIT=$(cd "$(dirname "$0")" && pwd)
HOOKS="$KIT/hooks"
LOCK="$KIT/UPSTREAM.lock"
# shellcheck source=kit-lib.sh
. "$KIT/kit-lib.sh"

say() { printf 'apply-patches: %s\n' "$@"; }
die() {
	printf 'apply-patches: %s\n' "$@" >&2
	exit 1
}

usage() {
	cat <<EOF
Usage: $0 [--check] CKPOOL_DIR

Patches the ckpool checkout in CKPOOL_DIR (the commit pinned in
$LOCK) so that it sends TheBitcoinGame events.
  --check            verify and locate every anchor, change nothing
  TBG_SKIP_VERIFY=1  skip the checksum check (development only)
EOF
}

check_only=0
while [ $# -gt 0 ]; do
	case $1 in
	--check) check_only=1 ;;
	-h | --help)
		usage
		exit 0
		;;
	--)
		shift
		break
		;;
	-*)
		usage >&2
		exit 2
		;;
	*) break ;;
	esac
	shift
done
if [ $# -ne 1 ]; then
	usage >&2
	exit 2
fi
[ -d "$1" ] || die "$1 is not a directory: give the path of a ckpool checkout."
DIR=$(cd "$1" && pwd)

[ -f "$LOCK" ] || die "$LOCK is missing: the kit is incomplete."
commit=$(lock_get "$LOCK" commit)
version=$(lock_get "$LOCK" version)
date=$(lock_get "$LOCK" date)
repository=$(lock_get "$LOCK" repository)
KIT_ID=$(kit_id "$KIT")

# 1. The four files exist and are the ones the kit was made for
missing=""
for f in $KIT_FILES; do
	[ -f "$DIR/$f" ] || missing="$missing $f"
done
if [ -n "$missing" ]; then
	die "$DIR does not look like a ckpool checkout: missing$missing." \
		"Clone $repository and check out $commit, then run this again."
fi

traces=$(kit_traces "$DIR")
if [ -n "$traces" ]; then
	same=1
	for f in $KIT_FILES; do
		grep -q "$KIT_MARKER" "$DIR/$f" || same=0
	done
	for f in $KIT_NEW_FILES; do
		cmp -s "$KIT/$f" "$DIR/src/$f" || same=0
	done
	grep -q "$KIT_MARKER kit $KIT_ID" "$DIR/src/stratifier.c" || same=0
	if [ "$same" = 1 ]; then
		say "$DIR is already patched by this kit ($KIT_ID): nothing to do."
		exit 0
	fi
	# shellcheck disable=SC2086
	die "REFUSED: $DIR already holds changes from a TheBitcoinGame patch kit," \
		"but not exactly this one ($KIT_ID), in:" $traces \
		"Patching it again would apply hooks twice. Start from a clean checkout:" \
		"  git -C '$DIR' checkout -- src && rm -f '$DIR/src/tbg_events.c' '$DIR/src/tbg_events.h'" \
		"then run this again."
fi

mismatch=""
for f in $KIT_FILES; do
	want=$(lock_get "$LOCK" "sha256:$f")
	[ -n "$want" ] || die "$LOCK has no sha256:$f line: regenerate it with update-lock.sh."
	got=$(sha256_file "$DIR/$f")
	if [ "$got" != "$want" ]; then
		mismatch="$mismatch$f|$want|$got "
	fi
done
report_mismatch() {
	local entry
	for entry in $mismatch; do
		printf '  %s\n    UPSTREAM.lock: %s\n    this tree:     %s\n' \
			"${entry%%|*}" "$(echo "$entry" | cut -d'|' -f2)" "${entry##*|}"
	done
}
if [ "${TBG_SKIP_VERIFY:-}" = 1 ]; then
	{
		echo "apply-patches: *******************************************************************"
		echo "apply-patches: * WARNING: TBG_SKIP_VERIFY=1: the checksums in UPSTREAM.lock are not *"
		echo "apply-patches: * enforced. The hooks may land in code this kit was never tested     *"
		echo "apply-patches: * against. Never ship a ckpool built this way.                       *"
		echo "apply-patches: *******************************************************************"
		if [ -n "$mismatch" ]; then
			echo "Files that differ from UPSTREAM.lock (patched anyway):"
			report_mismatch
		else
			echo "(All four files do match UPSTREAM.lock.)"
		fi
	} >&2
elif [ -n "$mismatch" ]; then
	head=""
	if command -v git >/dev/null 2>&1 && git -C "$DIR" rev-parse HEAD >/dev/null 2>&1; then
		head=" (this tree is at git commit $(git -C "$DIR" rev-parse HEAD))"
	fi
	{
		echo "apply-patches: REFUSED: $DIR is not the ckpool source this kit was made for$head."
		echo "The kit is pinned to ckpool $version, commit $commit ($date), from $repository."
		echo "Files that differ from patches/UPSTREAM.lock:"
		report_mismatch
		echo "What to do:"
		echo "  - to build the pinned version: git -C '$DIR' checkout $commit (a clean tree), run this again;"
		echo "  - to move the kit to this ckpool version: on a clean checkout of it run"
		echo "      $KIT/update-lock.sh '$DIR'"
		echo "    which rewrites UPSTREAM.lock and checks every anchor; then review the hooks and rebuild;"
		echo "  - development only: TBG_SKIP_VERIFY=1 skips this check (anchors are still checked)."
	} >&2
	exit 1
fi

# 2. Plan every edit in a scratch dir; nothing in DIR changes yet
work=$(mktemp -d "${TMPDIR:-/tmp}/tbg-patch.XXXXXX")
staged=()
cleanup() {
	local f
	for f in ${staged[@]+"${staged[@]}"}; do
		rm -f "$f"
	done
	rm -rf "$work"
}
trap cleanup EXIT

printf '/* %s kit %s: TheBitcoinGame events, see ckpool/README.md of TheBitcoinGame */\n' \
	"$KIT_MARKER" "$KIT_ID" >"$work/kit-marker.inc"

plan=""
# edit FILE NAME SCOPE ANCHOR COUNT before|after|replace SNIPPET
edit() {
	local spec
	spec="$work/$(basename "$1").spec"
	printf '%s\n' "$2" "$3" "$4" "$5" "$6" "$7" >>"$spec"
	plan="$plan  $1: $2 ($6, $5x)
"
}

S=src/stratifier.c
edit $S kit-marker "" '#define GEN_PRIORITY 2' 1 after "$work/kit-marker.inc"
edit $S emitter "" '#define GEN_PRIORITY 2' 1 after "$HOOKS/stratifier-glue.inc"
edit $S client-share-counters 'struct stratum_instance {' \
	'bool remote; /* Is this a remote client on a trusted remote server */' 1 after \
	"$HOOKS/stratifier-client-fields.inc"
edit $S init 'void *stratifier(void *arg)' 'sdata->ckp = ckp;' 1 after \
	"$HOOKS/stratifier-init.inc"
edit $S new-block-network "" 'LOGNOTICE("Block hash changed to %s", sdata->lastswaphash);' 2 after \
	"$HOOKS/stratifier-network-block.inc"
edit $S block-found-unnamed 'static void block_solve(ckpool_t *ckp, json_t *val)' \
	'LOGWARNING("Solved and confirmed block!");' 1 after "$HOOKS/stratifier-block-found.inc"
edit $S block-found-named 'static void block_solve(ckpool_t *ckp, json_t *val)' \
	'LOGWARNING("Solved and confirmed block %d by %s", height, workername);' 1 after \
	"$HOOKS/stratifier-block-found.inc"
edit $S miner-disconnected-count "" '__del_client(sdata, client);' 2 assert -
edit $S miner-disconnected \
	'static void __drop_client(sdata_t *sdata, stratum_instance_t *client, bool lazily, char **msg)' \
	'__del_client(sdata, client);' 1 before "$HOOKS/stratifier-disconnect.inc"
edit $S miner-disconnected-dropall 'static void drop_allclients(ckpool_t *ckp)' \
	'__del_client(sdata, client);' 1 before "$HOOKS/stratifier-disconnect-all.inc"
edit $S miner-connected \
	'static void client_auth(ckpool_t *ckp, stratum_instance_t *client, user_instance_t *user,' \
	'client->authorised = ret;' 1 after "$HOOKS/stratifier-connect.inc"
edit $S share-best-diff \
	'static void check_best_diff(sdata_t *sdata, user_instance_t *user,worker_instance_t *worker,' \
	'user->best_diff = sdiff;' 1 before "$HOOKS/stratifier-best-diff.inc"
edit $S share-submitted \
	'static json_t *parse_submit(stratum_instance_t *client, json_t *json_msg,' \
	'out:' 1 after "$HOOKS/stratifier-share.inc"
edit $S share-submitted-no-workbase \
	'static json_t *parse_submit(stratum_instance_t *client, json_t *json_msg,' \
	'return json_boolean(false);' 1 replace "$HOOKS/stratifier-share-no-workbase.inc"
edit $S diff-updated 'static void stratum_send_diff(sdata_t *sdata, const stratum_instance_t *client)' \
	'stratum_add_send(sdata, json_msg, client->id, SM_DIFF);' 1 before \
	"$HOOKS/stratifier-diff-sent.inc"
edit $S hashrate-update "" 'static void *statsupdate(void *arg)' 1 before \
	"$HOOKS/stratifier-hashrates.inc"
edit $S hashrate-update-tick 'static void *statsupdate(void *arg)' \
	'ts_to_tv(&now, &stats->last_update);' 1 after "$HOOKS/stratifier-stats-tick.inc"
edit src/ckpool.h event-socket-path-field 'struct ckpool_instance {' 'char *zmqblock;' 1 after \
	"$HOOKS/ckpool.h-field.inc"
edit src/ckpool.c event-socket-path-config 'static void parse_config(ckpool_t *ckp)' \
	'json_get_string(&ckp->zmqblock, json_conf, "zmqblock");' 1 after \
	"$HOOKS/ckpool.c-config.inc"
edit src/bitcoin.c signet-understood-rules "" \
	'static char* understood_rules[] = {"segwit"};' 1 replace \
	"$HOOKS/bitcoin.c-understood-rules.inc"
edit src/bitcoin.c signet-gbt-rules "" \
	'static const char *gbt_req = "{\"method\": \"getblocktemplate\", \"params\": [{\"capabilities\": [\"coinbasetxn\", \"workid\", \"coinbase/append\"], \"rules\" : [\"segwit\"]}]}\n";' \
	1 replace "$HOOKS/bitcoin.c-gbt-rules.inc"

mkdir "$work/new"
failed=""
for f in $KIT_FILES; do
	b=$(basename "$f")
	if ! awk -f "$KIT/edit.awk" "$work/$b.spec" - <"$DIR/$f" >"$work/new/$b" 2>"$work/$b.err"; then
		failed="$failed$(awk -v p="  $f: " '{ print p $0 }' "$work/$b.err")
"
	fi
done
if [ -n "$failed" ]; then
	{
		echo "apply-patches: ABORTED, nothing was changed in $DIR."
		echo "These anchors are missing or ambiguous:"
		printf '%s' "$failed"
		echo "Each anchor must match exactly the count shown, as a whole line. If ckpool moved"
		echo "on, update the anchor in $KIT/apply-patches.sh (and its hook in $HOOKS)"
		echo "after reading the new code, then regenerate the lock with update-lock.sh."
	} >&2
	exit 1
fi

if [ "$check_only" = 1 ]; then
	say "check: all anchors found in $DIR, nothing changed:"
	printf "%s" "$plan"
	exit 0
fi

# 3. Write: stage every file next to its target, then rename each into place
stage() {
	local from=$1 to=$2
	staged+=("$to.tbg-new")
	if [ -f "$to" ]; then
		cp -p "$to" "$to.tbg-new"
	fi
	cat "$from" >"$to.tbg-new"
}
for f in $KIT_FILES; do
	stage "$work/new/$(basename "$f")" "$DIR/$f"
done
for f in $KIT_NEW_FILES; do
	stage "$KIT/$f" "$DIR/src/$f"
done
for f in "${staged[@]}"; do
	mv -f "$f" "${f%.tbg-new}"
done
staged=()

say "patched $DIR" "  ckpool $version ($commit), kit $KIT_ID" "  added src/tbg_events.c, src/tbg_events.h; edits:"
printf "%s" "$plan"
say "next: cd '$DIR' && ./autogen.sh && ./configure --without-ckdb && make"

#!/usr/bin/env bash
# TheBitcoinGame ckpool patch kit: rewrites UPSTREAM.lock for another ckpool
# commit, then checks that every anchor of the kit is still found there.
#
# Copyright 2025 TheBitcoinGame contributors
# This program is free software; you can redistribute it and/or modify it
# under the terms of the GNU General Public License as published by the Free
# Software Foundation; either version 3 of the License, or (at your option)
# any later version.
#
# Usage: update-lock.sh CKPOOL_DIR
#
# CKPOOL_DIR must be a clean git checkout of upstream ckpool at the commit to
# pin (never a tree this kit patched). Commit and date come from git, the
# version from configure.ac. The repository, mirror and branch are kept from
# the current lock unless TBG_UPSTREAM_REPO, TBG_UPSTREAM_MIRROR or
# TBG_UPSTREAM_BRANCH say otherwise. Exits 1 if the lock was written but some
# anchor no longer matches: fix the kit before building.
set -euo pipefail
export LC_ALL=C

KIT=$(cd "$(dirname "$0")" && pwd)
LOCK="$KIT/UPSTREAM.lock"
# shellcheck source=kit-lib.sh
. "$KIT/kit-lib.sh"

say() { printf 'update-lock: %s\n' "$@"; }
die() {
	printf 'update-lock: %s\n' "$@" >&2
	exit 1
}

if [ $# -ne 1 ] || [ "${1#-}" != "$1" ]; then
	echo "Usage: $0 CKPOOL_DIR  (a clean git checkout of upstream ckpool)" >&2
	exit 2
fi
[ -d "$1" ] || die "$1 is not a directory: give the path of a ckpool checkout."
DIR=$(cd "$1" && pwd)

for f in $KIT_FILES configure.ac; do
	[ -f "$DIR/$f" ] || die "$DIR does not look like a ckpool checkout: $f is missing."
done

traces=$(kit_traces "$DIR")
if [ -n "$traces" ]; then
	# shellcheck disable=SC2086
	die "REFUSED: $DIR is already patched (by this kit or another version of it):" $traces \
		"A lock must describe upstream's files. Use a clean checkout:" \
		"  git -C '$DIR' checkout -- src && rm -f '$DIR/src/tbg_events.c' '$DIR/src/tbg_events.h'"
fi

command -v git >/dev/null 2>&1 || die "git is needed to read the commit of $DIR."
git -C "$DIR" rev-parse --verify HEAD >/dev/null 2>&1 ||
	die "$DIR is not a git checkout: clone upstream ckpool and check out the commit to pin."
# shellcheck disable=SC2086
dirty=$(git -C "$DIR" status --porcelain -- $KIT_FILES)
if [ -n "$dirty" ]; then
	die "REFUSED: files the kit patches differ from commit $(git -C "$DIR" rev-parse HEAD):" \
		"$dirty" "A lock must describe upstream's files: git -C '$DIR' checkout -- src"
fi

old() {
	if [ -f "$LOCK" ]; then lock_get "$LOCK" "$1"; fi
}
repository=${TBG_UPSTREAM_REPO:-$(old repository)}
repository=${repository:-https://bitbucket.org/ckolivas/ckpool.git}
mirror=${TBG_UPSTREAM_MIRROR:-$(old mirror)}
branch=${TBG_UPSTREAM_BRANCH:-$(old branch)}
commit=$(git -C "$DIR" rev-parse HEAD)
date=$(git -C "$DIR" log -1 --format=%cd --date=short HEAD)
version=$(awk -F'[][]' '/^AC_INIT/ { print $4; exit }' "$DIR/configure.ac")
[ -n "$version" ] || version=unknown
old_commit=$(old commit)
if [ "$old_commit" = "$commit" ]; then old_commit=""; fi

new=$(mktemp "$KIT/.UPSTREAM.lock.XXXXXX")
trap 'rm -f "$new"' EXIT
{
	echo "# TheBitcoinGame ckpool patch kit: the upstream ckpool it applies to."
	echo "# Written by patches/update-lock.sh; apply-patches.sh refuses files that differ."
	echo "repository=$repository"
	echo "mirror=$mirror"
	echo "branch=$branch"
	echo "commit=$commit"
	echo "version=$version"
	echo "date=$date"
	for f in $KIT_FILES; do
		echo "sha256:$f=$(sha256_file "$DIR/$f")"
	done
} >"$new"
chmod 644 "$new"
mv -f "$new" "$LOCK"
trap - EXIT

say "wrote $LOCK" "  ckpool $version, commit $commit ($date)${old_commit:+, was $old_commit}"
if bash "$KIT/apply-patches.sh" --check "$DIR" >/dev/null; then
	say "every anchor of the kit is found in $DIR." \
		"Next: review the hooks against the new code, apply and build:" \
		"  $KIT/apply-patches.sh '$DIR' && cd '$DIR' && ./autogen.sh && ./configure --without-ckdb && make" \
		"and update the pinned commit in ckpool/Dockerfile (CKPOOL_COMMIT) and ckpool/CHANGELOG.md."
else
	die "the lock is written, but the kit does not fit $DIR (see above)." \
		"Adapt the anchors in $KIT/apply-patches.sh and the hooks in $KIT/hooks before building."
fi

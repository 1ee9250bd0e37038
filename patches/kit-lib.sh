# TheBitcoinGame ckpool patch kit: helpers shared by apply-patches.sh and
# update-lock.sh. Sourced, not run.
#
# Copyright 2025 TheBitcoinGame contributors
# This program is free software; you can redistribute it and/or modify it
# under the terms of the GNU General Public License as published by the Free
# Software Foundation; either version 3 of the License, or (at your option)
# any later version.

# The upstream files the kit edits, relative to the ckpool checkout
KIT_FILES="src/stratifier.c src/ckpool.h src/ckpool.c src/bitcoin.c"
# Files the kit adds to src/
KIT_NEW_FILES="tbg_events.c tbg_events.h"
# Every edit carries this word, so a patched tree is recognised
KIT_MARKER="TBG-PATCHED"

# SHA-256 of stdin as 64 hex digits, with whichever tool this system has
sha256_stdin() {
	if command -v sha256sum >/dev/null 2>&1; then
		sha256sum | awk '{ print $1 }'
	elif command -v shasum >/dev/null 2>&1; then
		shasum -a 256 | awk '{ print $1 }'
	elif command -v openssl >/dev/null 2>&1; then
		openssl dgst -sha256 | awk '{ print $NF }'
	else
		echo "no sha256sum, shasum or openssl found: install one of them" >&2
		return 1
	fi
}

sha256_file() {
	sha256_stdin <"$1"
}

# Value of KEY in the lock file: lock_get LOCK KEY
lock_get() {
	awk -v key="$2" 'index($0, key "=") == 1 { print substr($0, length(key) + 2); exit }' "$1"
}

# Short id of this kit's contents: changes whenever a file that shapes the
# patched tree changes, and is written into the patched stratifier.c.
kit_id() {
	local kit=$1 f
	(
		cd "$kit"
		for f in UPSTREAM.lock apply-patches.sh kit-lib.sh edit.awk tbg_events.c tbg_events.h hooks/*.inc; do
			printf '%s %s\n' "$(sha256_file "$f")" "$f"
		done
	) | sha256_stdin | cut -c1-16
}

# Prints the kit's traces found in a ckpool tree, one per line (none: clean)
kit_traces() {
	local dir=$1 f
	for f in $KIT_FILES; do
		if [ -f "$dir/$f" ] && grep -q "$KIT_MARKER" "$dir/$f"; then
			echo "$f"
		fi
	done
	for f in $KIT_NEW_FILES; do
		if [ -e "$dir/src/$f" ]; then
			echo "src/$f"
		fi
	done
}

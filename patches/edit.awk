# TheBitcoinGame ckpool patch kit: anchored edits of one source file.
#
# Copyright 2025 TheBitcoinGame contributors
# This program is free software; you can redistribute it and/or modify it
# under the terms of the GNU General Public License as published by the Free
# Software Foundation; either version 3 of the License, or (at your option)
# any later version.
#
# Usage: awk -f edit.awk SPEC - < SOURCE > RESULT
#
# SPEC describes one edit in every 6 lines:
#   name     the anchor's name, used in messages
#   scope    a line opening the function or struct to search (it must occur
#            once in the file; the scope ends at the next line that is "}" or
#            "};" at column 0), or an empty line for the whole file
#   target   the anchor line
#   count    how many times the anchor must occur in the scope
#   where    before, after or replace: where the snippet goes, at every
#            match; or assert: only check the count
#   snippet  path of the text to insert ("-" for assert)
# Lines are compared whole, without their leading and trailing blanks.
#
# All edits are located first. When any anchor is missing, ambiguous or in
# conflict, one "anchor NAME: ..." line per problem goes to stderr, nothing
# to stdout, and the exit status is 1. Only POSIX awk is used (gawk, mawk,
# BSD awk).

function trim(s) {
	sub(/^[ \t]+/, "", s)
	sub(/[ \t\r]+$/, "", s)
	return s
}

function problem(msg) {
	print "anchor " msg > "/dev/stderr"
	failed = 1
}

FNR == 1 { input++ }
input == 1 { spec[++nspec] = $0; next }
{ src[++n] = $0; tsrc[n] = trim($0) }

END {
	if (nspec == 0 || nspec % 6) {
		print "edit.awk: malformed spec (" nspec " lines)" > "/dev/stderr"
		exit 2
	}
	for (e = 0; e < nspec / 6; e++) {
		name = spec[e * 6 + 1]
		scope = spec[e * 6 + 2]
		target = spec[e * 6 + 3]
		want = spec[e * 6 + 4] + 0
		where = spec[e * 6 + 5]
		snippet = spec[e * 6 + 6]

		lo = 1
		hi = n
		if (scope != "") {
			found = 0
			for (i = 1; i <= n; i++)
				if (tsrc[i] == scope) {
					found++
					lo = i
				}
			if (found != 1) {
				problem(name ": scope line \"" scope "\" found " found " times, expected 1")
				continue
			}
			for (hi = lo + 1; hi <= n; hi++)
				if (src[hi] ~ /^[}];?[ \t\r]*$/)
					break
			if (hi > n) {
				problem(name ": scope \"" scope "\" never closes")
				continue
			}
		}
		found = 0
		for (i = lo; i <= hi; i++)
			if (tsrc[i] == target)
				hit[++found] = i
		if (found != want) {
			problem(name ": \"" target "\" found " found " times" \
				(scope != "" ? " in \"" scope "\"" : "") ", expected " want)
			continue
		}
		if (where == "assert")
			continue
		if (where != "before" && where != "after" && where != "replace") {
			problem(name ": unknown place \"" where "\"")
			continue
		}
		text = ""
		while ((r = (getline line < snippet)) > 0)
			text = text line "\n"
		close(snippet)
		if (r < 0 || text == "") {
			problem(name ": cannot read snippet " snippet)
			continue
		}
		for (k = 1; k <= found; k++) {
			i = hit[k]
			if (where == "before")
				pre[i] = pre[i] text
			else if (where == "after")
				post[i] = post[i] text
			else if (i in repl)
				problem(name ": line " i " is already replaced by another edit")
			else
				repl[i] = text
		}
	}
	if (failed)
		exit 1
	for (i = 1; i <= n; i++) {
		if (i in pre)
			printf "%s", pre[i]
		if (i in repl)
			printf "%s", repl[i]
		else
			print src[i]
		if (i in post)
			printf "%s", post[i]
	}
}

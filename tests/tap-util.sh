# Sourced by the TAP tests that count their own results (tests/test-unit.sh, tests/test-deb.sh):
# n (tests so far) and failed (1 once one failed), diag, ok and skip.
n=0
failed=0

# diag TEXT: print TEXT, possibly several lines, as TAP diagnostics.
diag() {
	printf '%s\n' "$1" | sed 's/^/# /'
}

# ok STATUS DESCRIPTION: one test line; STATUS 0 passes.
ok() {
	n=$((n + 1))
	if [ "$1" -eq 0 ]; then
		echo "ok $n - $2"
	else
		echo "not ok $n - $2"
		failed=1
	fi
}

# skip REASON: one skipped test line.
skip() {
	n=$((n + 1))
	echo "ok $n # SKIP $1"
}

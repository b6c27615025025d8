# The small runner shared by the shell check suites (tests/nix/check.sh, tests/audit/check.sh):
# `check NAME COMMAND...` runs one check, prints `ok    NAME` or `FAIL  NAME` with its output
# indented, and counts; `summary SUITE` prints `SUITE: N passed, M failed` and returns non-zero if
# any failed. Source it after setting `work` to a temporary directory the suite removes.

passed=0
failed=0

check() {
  local name=$1
  shift
  if "$@" >"$work/out" 2>&1; then
    passed=$((passed + 1))
    echo "ok    $name"
  else
    failed=$((failed + 1))
    echo "FAIL  $name"
    sed 's/^/      /' "$work/out"
  fi
}

summary() {
  echo "$1: $passed passed, $failed failed"
  [ "$failed" -eq 0 ]
}

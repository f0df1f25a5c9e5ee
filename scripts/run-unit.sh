#!/usr/bin/env bash
# Runs each unit test binary in its own process; prints a summary line.
set -u
pass=0; fail=0; rc=0
for t in "$@"; do
  out=$("$t" 2>&1); r=$?
  echo "$out" | tail -n 20
  line=$(echo "$out" | grep -Eo '[0-9]+ passed, [0-9]+ failed' | tail -1)
  p=$(echo "$line" | awk '{print $1}'); f=$(echo "$line" | awk '{print $3}')
  pass=$((pass + ${p:-0})); fail=$((fail + ${f:-0}))
  if [ $r -ne 0 ]; then rc=1; [ "${f:-0}" = 0 ] && fail=$((fail + 1)); echo "FAILED: $t (exit $r)"; fi
done
echo "unit: $pass passed, $fail failed"
exit $rc

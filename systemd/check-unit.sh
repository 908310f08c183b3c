#!/usr/bin/env bash
# Checks the shipped unit as CI must: `systemd-analyze verify` prints nothing,
# and `systemd-analyze security --offline=true` rates its exposure 1.5 or less.
# ExecStart is pointed at the built binary, since verify checks it exists.
set -euo pipefail
cd "$(dirname "$0")/.."
binary=${1:-$PWD/target/debug/mde-poller}
max=${MAX_EXPOSURE:-1.5}
[ -x "$binary" ] || { echo "check-unit: build the binary first ($binary missing)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sed "s#/usr/bin/mde-poller#$binary#g" systemd/mde-poller.service > "$work/mde-poller.service"
verify=$(systemd-analyze verify "$work/mde-poller.service" 2>&1 || true)
if [ -n "$verify" ]; then
  echo "check-unit: systemd-analyze verify complained:" >&2
  echo "$verify" >&2
  exit 1
fi
score=$(systemd-analyze security --offline=true --no-pager "$work/mde-poller.service" 2>&1 \
  | sed -n 's/.*Overall exposure level for mde-poller.service: \([0-9.]*\).*/\1/p')
[ -n "$score" ] || { echo "check-unit: no exposure score printed" >&2; exit 1; }
if awk -v s="$score" -v m="$max" 'BEGIN { exit !(s > m) }'; then
  echo "check-unit: exposure $score is above $max" >&2
  exit 1
fi
echo "check-unit: verify clean, exposure $score (limit $max)"

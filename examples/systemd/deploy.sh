#!/usr/bin/env bash
# Deploy a new billing.py to the running jobservice: hot-patch it when hotfix
# says it is safe, restart when the change cannot be applied in place, and put
# the previous file back when the patch was applied and rolled back.
#
#   sudo examples/systemd/deploy.sh path/to/new/billing.py
set -uo pipefail
NEW="$1"
LIVE=/srv/jobservice/examples/jobservice/billing.py
HOTFIX="sudo -u jobs env HOTFIX_SOCKET=/run/jobservice/hotfix.sock HOTFIX_TOKEN_FILE=/run/jobservice/token /srv/jobservice/.venv/bin/hotfix"

cp -p "$LIVE" "$LIVE.previous"
install -m 0644 -o root -g root "$NEW" "$LIVE"

dry="$($HOTFIX dry-run billing --json)"; rc=$?
case $rc in
  0) ;;                                            # safe (or unchanged)
  1) echo "risky change: review it, then apply with --allow-risky or restart" >&2; exit 1 ;;
  3) echo "hotfix cannot apply this change in place: restarting" >&2
     exec systemctl restart jobservice ;;
  *) echo "endpoint unreachable (rc=$rc): restarting" >&2
     exec systemctl restart jobservice ;;
esac
sha="$(printf '%s' "$dry" | python3 -c 'import json,sys; print(json.load(sys.stdin)["result"]["report"]["source"]["disk"]["sha256"])')"

$HOTFIX apply billing --expect-sha256 "$sha" --probation 10; rc=$?
case $rc in
  0) echo "patched in place" ;;
  1) echo "the patch failed its checks and was rolled back: restoring the previous file" >&2
     cp -p "$LIVE.previous" "$LIVE"; exit 1 ;;
  3) echo "patch refused: restarting" >&2
     exec systemctl restart jobservice ;;
  *) echo "endpoint unreachable (rc=$rc): check 'hotfix history', then restart if needed" >&2; exit "$rc" ;;
esac

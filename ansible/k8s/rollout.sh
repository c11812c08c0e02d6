#!/usr/bin/env bash
# Roll a reviewed module file across the pods of a Kubernetes workload with hotfix, one pod at a
# time, through `kubectl exec`, reading the CLI's --json (never its text). A documented recipe:
# not run by the test suite (the Ansible playbook next door is).
#
#   SELECTOR=app=jobs CONTAINER=app MODULE=billing DEST=/srv/app/billing.py \
#   SOCKET_DIR=/run/app/hotfix ansible/k8s/rollout.sh reviewed/billing.py
#
# Needs kubectl and python3 where it runs; in each pod the service runs under
# `hotfix run --socket-dir $SOCKET_DIR -- ...` and `hotfix` is on PATH (HOTFIX=... otherwise).
#
# Per pod, in name order (the first pod is the canary of the workload):
#   1. keep the pod's current file as DEST.hotfix-previous, copy the reviewed one (kubectl cp;
#      COPY=0 when a ConfigMap or volume already carries the new file);
#   2. dry run in every process of the pod; every process must see the reviewed sha256;
#   3. apply in every process of the pod, canary process first, pinned to that sha256.
# The first failure stops the loop: the failing pod gets its previous file back (hotfix has
# undone its processes) and the pods patched before it are rolled back (ON_FAILURE=rollback,
# the default: the workload ends on one version) or left patched (ON_FAILURE=keep).
# A blocked change (exit 3) cannot be applied in place: restart the workload once the fix is in
# its image or ConfigMap (a new pod runs what its image/volume holds, not what kubectl cp wrote).
# Exit codes are hotfix's: 0 done, 1 risky or rolled back, 2 usage, 3 blocked or rejected, 4 unreachable.
set -uo pipefail

SRC="${1:?usage: rollout.sh REVIEWED_FILE (with SELECTOR CONTAINER MODULE DEST SOCKET_DIR set)}"
: "${SELECTOR:?}" "${CONTAINER:?}" "${MODULE:?}" "${DEST:?}" "${SOCKET_DIR:?}"
HOTFIX="${HOTFIX:-hotfix}"
PROBATION="${PROBATION:-10}"
ON_FAILURE="${ON_FAILURE:-rollback}"
COPY="${COPY:-1}"
NAMESPACE_ARGS=()
[[ -n "${NAMESPACE:-}" ]] && NAMESPACE_ARGS=(-n "$NAMESPACE")
SHA="$(sha256sum "$SRC" | cut -d' ' -f1)"   # the reviewed version, pinned for every pod

in_pod() { kubectl "${NAMESPACE_ARGS[@]}" exec "$1" -c "$CONTAINER" -- "${@:2}"; }

# What a `rollout dry-run --json` document says to do: apply | unchanged | mismatch | blocked | risky | error
judge() {
  python3 -c '
import json, sys
doc, reviewed = json.load(sys.stdin), sys.argv[1]
procs = [p for p in doc.get("processes") or [] if p.get("verdict")]
verdicts = {p["verdict"] for p in procs}
if not procs:
    print("error")
elif {p.get("sha256") for p in procs} != {reviewed}:
    print("mismatch")
elif "blocked" in verdicts:
    print("blocked")
elif "risky" in verdicts and not int(sys.argv[2]):
    print("risky")
elif verdicts == {"unchanged"}:
    print("unchanged")
else:
    print("apply")' "$SHA" "${ALLOW_RISKY:-0}"
}

field() { python3 -c 'import json, sys; print(json.load(sys.stdin).get(sys.argv[1]) or "")' "$1"; }

undo() {  # roll back the pods patched so far, newest first, with their previous files
  local failed_pod="$1" rc="$2" pod i
  in_pod "$failed_pod" cp -p "$DEST.hotfix-previous" "$DEST" || true
  if [[ "$ON_FAILURE" == rollback ]]; then
    for ((i = ${#PATCHED[@]} - 1; i >= 0; i--)); do
      pod="${PATCHED[i]}"
      if in_pod "$pod" "$HOTFIX" rollout --socket-dir "$SOCKET_DIR" rollback --json >"rollback-${pod##*/}.json"; then
        in_pod "$pod" cp -p "$DEST.hotfix-previous" "$DEST"
        echo "rolled back $pod" >&2
      else
        echo "ROLLBACK FAILED on $pod: see rollback-${pod##*/}.json; restart it" >&2
      fi
    done
  else
    echo "kept the fix on: ${PATCHED[*]:-no pod}" >&2
  fi
  echo "stopped at $failed_pod (exit $rc); the pods after it were not touched" >&2
  exit "$rc"
}

PATCHED=()
mapfile -t PODS < <(kubectl "${NAMESPACE_ARGS[@]}" get pods -l "$SELECTOR" -o name | sort)
[[ ${#PODS[@]} -gt 0 ]] || { echo "no pod matches $SELECTOR" >&2; exit 4; }
for pod in "${PODS[@]}"; do
  name="${pod##*/}"
  in_pod "$pod" cp -p "$DEST" "$DEST.hotfix-previous" || undo "$pod" 4
  if [[ "$COPY" == 1 ]]; then
    kubectl "${NAMESPACE_ARGS[@]}" cp "$SRC" "$name:$DEST" -c "$CONTAINER" || undo "$pod" 4
  fi

  in_pod "$pod" "$HOTFIX" rollout --socket-dir "$SOCKET_DIR" dry-run "$MODULE" --json >"check-$name.json"
  verdict="$(judge <"check-$name.json")"
  case "$verdict" in
    unchanged) echo "$pod: already runs $SHA"; continue ;;
    apply) ;;
    blocked) echo "$pod: hotfix cannot apply this change in place: restart the workload with the fix in its image" >&2
             undo "$pod" 3 ;;
    risky) echo "$pod: risky change: review check-$name.json, then ALLOW_RISKY=1" >&2; undo "$pod" 1 ;;
    mismatch) echo "$pod: the processes do not see the reviewed file $SHA" >&2; undo "$pod" 3 ;;
    *) echo "$pod: no process answered: see check-$name.json" >&2; undo "$pod" 4 ;;
  esac

  risky_flag=()
  [[ "${ALLOW_RISKY:-0}" == 1 ]] && risky_flag=(--allow-risky)
  in_pod "$pod" "$HOTFIX" rollout --socket-dir "$SOCKET_DIR" apply "$MODULE" --expect-sha256 "$SHA" \
      --probation "$PROBATION" "${risky_flag[@]}" --json >"apply-$name.json"
  rc=$?
  if [[ $rc -ne 0 ]]; then
    echo "$pod: $(field outcome <"apply-$name.json"): $(field message <"apply-$name.json")" >&2
    undo "$pod" "$rc"
  fi
  [[ "$(field outcome <"apply-$name.json")" == applied ]] && PATCHED+=("$pod")
  echo "$pod: $(field outcome <"apply-$name.json")"
done
echo "every pod runs $SHA"

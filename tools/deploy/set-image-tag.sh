#!/usr/bin/env bash
# Sets one image's tag in the fleet's Helm release and waits for its rollout:
#
#   tools/deploy/set-image-tag.sh <release> <namespace> <image> <tag>
#
# <image> is a section of the chart's values (a roster service, gateway or
# web); an empty <tag> gives it back the release's global tag. The chart's
# new defaults, the release's own values and this tag, nothing else
# (--reset-then-reuse-values). Helm rolls a rollout that does not become
# ready back itself (--rollback-on-failure). Helm locks the release during
# an operation: while another image's release holds it (several start at
# once after a change to the shared libraries) this waits, 10 minutes at
# most. The last line is `revision=<the revision it made>`.
set -euo pipefail

release=$1 namespace=$2 image=$3 tag=$4
chart=$(dirname "$0")/../../deploy/helm/social
log=$(mktemp)
trap 'rm -f "$log"' EXIT

for _ in $(seq 40); do
  if helm upgrade "$release" "$chart" -n "$namespace" \
      --reset-then-reuse-values --set-string "${image}.image.tag=${tag}" \
      --rollback-on-failure --wait=watcher --timeout 10m 2>&1 | tee "$log"; then
    echo "revision=$(sed -n 's/^REVISION: *//p' "$log")"
    exit 0
  fi
  grep -q "another operation (install/upgrade/rollback) is in progress" "$log" || exit 1
  echo "another release holds ${release}: waiting"
  sleep 15
done
echo "${release} stayed locked for 10 minutes" >&2
exit 1

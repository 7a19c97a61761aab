#!/usr/bin/env bash
# Checks the deployment files the way their consumers will read them:
# - deploy/systemd/pinproxy.service and pinproxy.socket with `systemd-analyze verify` (which also
#   needs the ExecStart binary, so pass one: deploy/lint.sh path/to/pinproxy) and
#   prints `systemd-analyze security`'s exposure score for it;
# - deploy/kubernetes/*.yaml with `kubernetes-validate --strict` (PyPI; ships its
#   schemas, works offline) against the oldest Kubernetes with native sidecars
#   enabled by default (1.29) and the newest it knows.
set -euo pipefail
cd "$(dirname "$0")/.."
binary=${1:-target/release/pinproxy}

unit=deploy/systemd/pinproxy.service
exec_start=$(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$unit")
if [ ! -x "$exec_start" ]; then
    [ -x "$binary" ] || { echo "lint: build pinproxy first or pass its path (needed at $exec_start)" >&2; exit 1; }
    install -m 0755 "$binary" "$exec_start"
fi
echo "== systemd-analyze verify $unit deploy/systemd/pinproxy.socket"
systemd-analyze verify "$unit" deploy/systemd/pinproxy.socket
echo "ok"
echo "== systemd-analyze security $unit"
systemd-analyze security --offline=true "$unit" | tail -n 1

echo "== the ConfigMap's proxy.toml is a config pinproxy accepts"
config=$(mktemp --suffix=.toml)
trap 'rm -f "$config"' EXIT
python3 -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["data"]["proxy.toml"], end="")' \
    deploy/kubernetes/configmap.yaml > "$config"
"$binary" check --config "$config"

echo "== kubernetes-validate --strict deploy/kubernetes/*.yaml"
for version in 1.29.0 ""; do
    python3 -m kubernetes_validate --strict ${version:+-k "$version"} deploy/kubernetes/*.yaml
done

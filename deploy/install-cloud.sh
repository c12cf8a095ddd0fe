#!/usr/bin/env bash
# Install (or update) the cloud side's ingest service on a Debian/Ubuntu host (Python 3.10+).
#
#   sudo deploy/install-cloud.sh [--wheelhouse DIR] [SOURCE]
#       SOURCE: wheel file or project dir (default: this checkout)
#       --wheelhouse DIR: pip installs from DIR alone, with no index (see --help)
#
# Idempotent: re-running upgrades in place; config, credentials and the store are kept.
# Creates: user edge-trainer, /opt/edge-trainer/venv with the `cloud` extra (ingest, store, labelling: no
# torch, no Ultralytics; training hosts install `[trainer]`), /etc/edge-trainer/trainer.yaml (the example,
# only if absent), /etc/edge-trainer/credentials/ (empty placeholders the unit's LoadCredential= needs),
# /var/lib/edge-trainer (by the unit's StateDirectory=), and installs the worker unit
# edge-trainer-ingest@.service and enables worker 1; installs edge-trainer-repo-refresh.{service,timer} and
# enables the timer where a release repository exists; edge-trainer-crl-refresh.{service,timer} likewise where
# the site PKI exists.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PREFIX=/opt/edge-trainer
VENV=$PREFIX/venv
PYTHON=${PYTHON:-python3}
PROJECT_EXTRA=cloud

# shellcheck source=deploy/install-lib.sh
. "$HERE/install-lib.sh"

parse_args "$@"
require_root
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || {
    echo "the cloud side needs Python 3.10+ (set PYTHON=/path/to/python3.11)" >&2
    exit 1
}
getent group edge-trainer >/dev/null || groupadd --system edge-trainer
id edge-trainer >/dev/null 2>&1 || useradd --system --gid edge-trainer --home-dir /var/lib/edge-trainer \
    --no-create-home --shell /usr/sbin/nologin edge-trainer

if [[ ! -x "$VENV/bin/python" ]]; then
    mkdir -p "$PREFIX"
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet --upgrade "${SOURCE}[cloud]"
"$VENV/bin/edge-trainer" serve --help >/dev/null

install -d -m 0750 -o root -g edge-trainer /etc/edge-trainer
install -d -m 0700 -o root -g root /etc/edge-trainer/credentials
for secret in mqtt-password s3-secret-key label-studio-token console-password; do
    [[ -e /etc/edge-trainer/credentials/$secret ]] || install -m 0600 /dev/null "/etc/edge-trainer/credentials/$secret"
done
if [[ ! -e /etc/edge-trainer/trainer.yaml ]]; then
    install -m 0640 -o root -g edge-trainer "$HERE/../examples/trainer.yaml" /etc/edge-trainer/trainer.yaml
fi
if [[ -d "$HERE/../docs" ]]; then
    install -d "$PREFIX/docs" && cp -r "$HERE/../docs/." "$PREFIX/docs/"
fi

install -m 0644 "$HERE/../systemd/edge-trainer-ingest@.service" /etc/systemd/system/edge-trainer-ingest@.service
# The release host's refresh of the repository's online metadata (enabled only where a repository and the
# online keys are: /var/lib/edge-trainer/repo and /etc/edge-trainer/keys, docs/OPERATIONS.md §10).
# The site broker's CRL refresh (enabled only where the site PKI is: /etc/mosquitto/edge/ca.key).
# The fleet pages: installed, not enabled (systemctl enable --now edge-trainer-console; docs/CLOUD.md).
for unit in edge-trainer-repo-refresh.service edge-trainer-repo-refresh.timer \
    edge-trainer-crl-refresh.service edge-trainer-crl-refresh.timer edge-trainer-console.service; do
    install -m 0644 "$HERE/../systemd/$unit" "/etc/systemd/system/$unit"
done
install -d -m 0750 -o root -g edge-trainer /etc/edge-trainer/keys
if [[ -d /run/systemd/system ]]; then
    systemctl daemon-reload
    systemctl enable edge-trainer-ingest@1.service
    if [[ -d /var/lib/edge-trainer/repo/metadata ]]; then
        systemctl enable --now edge-trainer-repo-refresh.timer
    fi
    if [[ -f /etc/mosquitto/edge/ca.key ]]; then
        systemctl enable --now edge-trainer-crl-refresh.timer
    fi
else
    echo "systemd is not running here: unit installed, enable it with 'systemctl enable edge-trainer-ingest@1'" >&2
fi
echo "edge-trainer installed: edit /etc/edge-trainer/trainer.yaml, put secrets in /etc/edge-trainer/credentials/,"
echo "then: systemctl restart edge-trainer-ingest@1 && journalctl -u edge-trainer-ingest@1 -f"
echo "      /opt/edge-trainer/venv/bin/edge-trainer ingest-status --config /etc/edge-trainer/trainer.yaml"

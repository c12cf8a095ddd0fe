# shellcheck shell=bash
# Functions shared by install-x86.sh, install-jetson.sh (and, for its options, install-cloud.sh). Every step
# is idempotent.
# Run on a box as root, from an unpacked checkout or release tarball of this repository (the scripts install
# the units, the udev rule, the factory model and the docs from it).

usage_common() {
    cat <<EOF
usage: sudo $0 [--wheelhouse DIR] [SOURCE]

  SOURCE            wheel file or project directory to install (default: this checkout)
  --wheelhouse DIR  install from the wheels in DIR only, never from an index (offline plants): DIR must hold
                    every wheel the install needs, pip included, and the build backend when SOURCE is a
                    directory. Make one on a machine with network and the box's Python version:
                      python3 -m pip download --dest DIR pip 'hatchling>=1.26' '.[${PROJECT_EXTRA:-edge}]'
EOF
}

parse_args() { # parse_args "$@": sets SOURCE (default: the checkout) and WHEELHOUSE
    WHEELHOUSE=""
    SOURCE=""
    while [[ $# -gt 0 ]]; do
        case "$1" in
        --wheelhouse)
            [[ $# -ge 2 ]] || { usage_common >&2; exit 2; }
            WHEELHOUSE=$2
            shift 2
            ;;
        --wheelhouse=*)
            WHEELHOUSE=${1#--wheelhouse=}
            shift
            ;;
        -h | --help)
            usage_common
            exit 0
            ;;
        -*)
            echo "unknown option $1" >&2
            usage_common >&2
            exit 2
            ;;
        *)
            SOURCE=$1
            shift
            ;;
        esac
    done
    SOURCE=${SOURCE:-$(dirname "$HERE")}
    if [[ -n "$WHEELHOUSE" ]]; then
        [[ -d "$WHEELHOUSE" ]] || { echo "--wheelhouse $WHEELHOUSE: no such directory" >&2; exit 2; }
        # every pip below (and the isolated build of SOURCE) reads these: wheels from DIR, no index at all
        export PIP_NO_INDEX=1 PIP_FIND_LINKS
        PIP_FIND_LINKS=$(cd "$WHEELHOUSE" && pwd)
    fi
    export PIP_DISABLE_PIP_VERSION_CHECK=1
}

require_root() {
    if [[ $(id -u) -ne 0 ]]; then
        echo "run as root (sudo $0)" >&2
        exit 1
    fi
}

ensure_packages() {
    local missing=()
    local pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    if [[ ${#missing[@]} -gt 0 ]]; then
        apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
    fi
}

# GStreamer and its Python bindings: RTSP, CSI and GStreamer cameras are read through them (agent/sources/gst.py),
# from the system's packages, seen by the agent's venv through --system-site-packages. On a Jetson they are
# JetPack's (with its hardware decoders); elsewhere Debian's / Ubuntu's.
GSTREAMER_PACKAGES=(python3-gi gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0 gstreamer1.0-plugins-base
    gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-libav)

ensure_user() {
    if ! getent group edge-agent >/dev/null; then
        groupadd --system edge-agent
    fi
    if ! id edge-agent >/dev/null 2>&1; then
        useradd --system --gid edge-agent --home-dir /var/lib/edge-agent --no-create-home \
            --shell /usr/sbin/nologin edge-agent
    fi
    getent group video >/dev/null || groupadd --system video
    usermod -a -G video edge-agent
    # the unit's StateDirectory= makes it at the first start; made now, an `edge-agent ota` command run before
    # that start finds it the agent's (it refuses to write into another user's state as root)
    install -d -m 0750 -o edge-agent -g edge-agent /var/lib/edge-agent
}

ensure_venv() { # ensure_venv PYTHON VENV [venv args...]
    local python=$1 venv=$2
    shift 2
    if [[ ! -x "$venv/bin/python" ]]; then
        mkdir -p "$(dirname "$venv")"
        "$python" -m venv "$@" "$venv"
    elif [[ " $* " == *" --system-site-packages "* ]]; then
        # an older install made the venv without the system's packages (GStreamer's bindings): let it see them
        sed -i 's/^include-system-site-packages = false$/include-system-site-packages = true/' "$venv/pyvenv.cfg"
    fi
    "$venv/bin/python" -m pip install --quiet --upgrade pip
}

install_agent() { # install_agent VENV SOURCE EXTRAS
    local venv=$1 source=$2 extras=$3
    # a project dir or a wheel path; pip accepts "PATH[extra]" for both
    "$venv/bin/python" -m pip install --quiet --upgrade "${source}${extras}"
    "$venv/bin/edge-agent" --help >/dev/null
}

install_factory_model() { # the model examples and `edge-agent config example` name: /opt/edge-agent/models
    local models=$HERE/../models/demo
    install -d -m 0755 /opt/edge-agent/models
    if [[ -f "$models/demo-int8.onnx" ]]; then
        install -m 0644 "$models/demo-int8.onnx" "$models/demo.onnx" /opt/edge-agent/models/
    else
        echo "note: no factory model in $models; set model.path in /etc/edge-agent/config.yaml" >&2
    fi
    if [[ -d "$HERE/../docs" ]]; then
        install -d /opt/edge-agent/docs && cp -r "$HERE/../docs/." /opt/edge-agent/docs/
    fi
}

ensure_config() {
    # root-owned and only readable by the agent: the unit mounts /etc read-only for the agent anyway, so
    # neither the configuration nor the trust roots can be changed by the agent's own process
    install -d -m 0750 -o root -g edge-agent /etc/edge-agent
    install -d -m 0750 -o root -g edge-agent /etc/edge-agent/trust
    install -d -m 0700 -o root -g root /etc/edge-agent/credentials
    if [[ ! -e /etc/edge-agent/config.yaml ]]; then
        # a commented configuration that runs as written (the factory model and a synthetic camera); a
        # failure here is a broken install, not a reason to leave an empty file behind
        /opt/edge-agent/venv/bin/edge-agent config example >/etc/edge-agent/config.yaml.new
        /opt/edge-agent/venv/bin/edge-agent run --check --config /etc/edge-agent/config.yaml.new >/dev/null
        chown root:edge-agent /etc/edge-agent/config.yaml.new
        chmod 0640 /etc/edge-agent/config.yaml.new
        mv /etc/edge-agent/config.yaml.new /etc/edge-agent/config.yaml
        CONFIG_WRITTEN=1
    fi
}

install_unit() { # install_unit SYSTEMD_DIR [DROP_IN...]: the agent's unit (with the drop-ins named, from
    # SYSTEMD_DIR/edge-agent.service.d/), the USB update unit and its udev rule
    local units=$1 drop_in
    shift
    install -m 0644 "$units/edge-agent.service" /etc/systemd/system/edge-agent.service
    for drop_in in "$@"; do
        install -D -m 0644 "$units/edge-agent.service.d/$drop_in" "/etc/systemd/system/edge-agent.service.d/$drop_in"
    done
    install -m 0644 "$units/edge-agent-usb@.service" /etc/systemd/system/edge-agent-usb@.service
    install -D -m 0755 "$HERE/edge-agent-usb-install" /opt/edge-agent/bin/edge-agent-usb-install
    install -m 0644 "$HERE/udev/99-edge-agent-usb.rules" /etc/udev/rules.d/99-edge-agent-usb.rules
    if [[ -d /run/systemd/system ]]; then
        systemctl daemon-reload
        systemctl enable edge-agent.service
        udevadm control --reload || true
    else
        echo "systemd is not running here: unit installed, enable it with 'systemctl enable edge-agent'" >&2
    fi
}

print_next_steps() {
    local host
    host=$(hostname)
    cat <<EOF

edge-agent installed (/opt/edge-agent/venv, unit edge-agent.service enabled).
EOF
    if [[ ${CONFIG_WRITTEN:-0} -eq 1 ]]; then
        cat <<EOF
/etc/edge-agent/config.yaml was written from 'edge-agent config example': it runs as written, with the
factory model and a synthetic demo camera, as device '$host' for a broker on localhost:1883.
EOF
    else
        echo "/etc/edge-agent/config.yaml was kept as it was."
    fi
    cat <<EOF
Next (docs/OPERATIONS.md §2):
  1. edit /etc/edge-agent/config.yaml: mqtt (broker, site, device), cameras, their alert rules
  2. secrets it names, one file each, root-only:  install -m 0600 /dev/stdin /etc/edge-agent/credentials/NAME
     (mqtt-password and mqtt-client.key are loaded by the unit; an empty or missing one the file names stops
     the agent with that reason in the journal)
  3. the release keys' roots, for model updates: /etc/edge-agent/trust/root.json and offline-root.json
  4. check:  /opt/edge-agent/venv/bin/edge-agent run --check --config /etc/edge-agent/config.yaml
  5. start:  systemctl restart edge-agent && journalctl -u edge-agent -f
EOF
}

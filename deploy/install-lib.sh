# shellcheck shell=bash
# Functions shared by install-x86.sh and install-jetson.sh. Every step is idempotent.

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
}

ensure_venv() { # ensure_venv PYTHON VENV [venv args...]
    local python=$1 venv=$2
    shift 2
    if [[ ! -x "$venv/bin/python" ]]; then
        mkdir -p "$(dirname "$venv")"
        "$python" -m venv "$@" "$venv"
    fi
    "$venv/bin/python" -m pip install --quiet --upgrade pip
}

install_agent() { # install_agent VENV SOURCE EXTRAS
    local venv=$1 source=$2 extras=$3
    # a project dir or a wheel path; pip accepts "PATH[extra]" for both
    "$venv/bin/python" -m pip install --quiet --upgrade "${source}${extras}"
    "$venv/bin/edge-agent" --help >/dev/null
}

ensure_config() {
    install -d -m 0750 -o root -g edge-agent /etc/edge-agent
    install -d -m 0700 -o root -g root /etc/edge-agent/credentials
    if [[ ! -e /etc/edge-agent/config.yaml ]]; then
        if [[ -x /opt/edge-agent/venv/bin/edge-agent ]] &&
            /opt/edge-agent/venv/bin/edge-agent config example >/etc/edge-agent/config.yaml.new 2>/dev/null; then
            mv /etc/edge-agent/config.yaml.new /etc/edge-agent/config.yaml
        else
            rm -f /etc/edge-agent/config.yaml.new
            echo "# edge-agent configuration: see docs/OPERATIONS.md" >/etc/edge-agent/config.yaml
        fi
        chown root:edge-agent /etc/edge-agent/config.yaml
        chmod 0640 /etc/edge-agent/config.yaml
    fi
}

install_unit() { # install_unit UNIT_FILE
    install -m 0644 "$1" /etc/systemd/system/edge-agent.service
    if [[ -d /run/systemd/system ]]; then
        systemctl daemon-reload
        systemctl enable edge-agent.service
    else
        echo "systemd is not running here: unit installed, enable it with 'systemctl enable edge-agent'" >&2
    fi
}

#!/usr/bin/env bash
# Site PKI for the broker: a CA, the broker's server certificate and one certificate per device.
#
#   make-certs.sh ca DIR [DAYS]                 DIR/ca.key DIR/ca.crt             (refuses to overwrite)
#   make-certs.sh server DIR HOSTNAME [IP...]   DIR/server.key DIR/server.crt     (SAN: HOSTNAME and IPs)
#   make-certs.sh device DIR DEVICE_ID [DAYS]   DIR/devices/DEVICE_ID.key/.crt    (CN = DEVICE_ID)
#
# Keys are EC P-256, written mode 0600. The device CN is its MQTT username on the TLS listener
# (use_identity_as_username), so it must be a valid topic level: letters, digits, ". _ : -".
# Keep ca.key offline after the devices are enrolled.
set -euo pipefail

usage() { sed -n '2,12p' "$0" >&2; exit 2; }
[[ $# -ge 2 ]] || usage
cmd=$1
dir=$2
shift 2
mkdir -p "$dir"
umask 077

newkey() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

sign() { # sign CSR_FILE OUT_CRT DAYS EXTFILE
    openssl x509 -req -in "$1" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
        -out "$2" -days "$3" -sha256 -extfile "$4" 2>/dev/null
}

case "$cmd" in
ca)
    days=${1:-3650}
    if [[ -e "$dir/ca.key" ]]; then
        echo "make-certs: $dir/ca.key exists; not overwriting the site CA" >&2
        exit 1
    fi
    newkey "$dir/ca.key"
    openssl req -x509 -new -key "$dir/ca.key" -sha256 -days "$days" -subj "/CN=edge-site-ca" \
        -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" -out "$dir/ca.crt"
    chmod 0644 "$dir/ca.crt"
    echo "$dir/ca.crt"
    ;;
server)
    [[ $# -ge 1 ]] || usage
    host=$1
    shift
    san="DNS:$host"
    for ip in "$@"; do san="$san,IP:$ip"; done
    newkey "$dir/server.key"
    openssl req -new -key "$dir/server.key" -subj "/CN=$host" -out "$dir/server.csr"
    ext=$(mktemp)
    trap 'rm -f "$ext"' EXIT
    printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\nbasicConstraints=CA:FALSE\n' \
        "$san" >"$ext"
    sign "$dir/server.csr" "$dir/server.crt" 825 "$ext"
    rm -f "$dir/server.csr"
    chmod 0644 "$dir/server.crt"
    echo "$dir/server.crt"
    ;;
device)
    [[ $# -ge 1 ]] || usage
    id=$1
    days=${2:-1825}
    if [[ ! "$id" =~ ^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$ ]] || [[ "$id" == fleet || "$id" == groups ]]; then
        echo "make-certs: '$id' is not a valid device id" >&2
        exit 1
    fi
    mkdir -p "$dir/devices"
    newkey "$dir/devices/$id.key"
    openssl req -new -key "$dir/devices/$id.key" -subj "/CN=$id" -out "$dir/devices/$id.csr"
    ext=$(mktemp)
    trap 'rm -f "$ext"' EXIT
    printf 'extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\nbasicConstraints=CA:FALSE\n' >"$ext"
    sign "$dir/devices/$id.csr" "$dir/devices/$id.crt" "$days" "$ext"
    rm -f "$dir/devices/$id.csr"
    chmod 0644 "$dir/devices/$id.crt"
    echo "$dir/devices/$id.crt"
    ;;
*)
    usage
    ;;
esac

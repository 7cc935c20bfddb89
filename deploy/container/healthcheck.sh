#!/bin/bash
# Docker HEALTHCHECK for neon-steward without curl or wget in the image: one HTTP/1.0
# GET /healthz over bash's /dev/tcp to the port in NEON_STEWARD_LISTEN. Healthy iff the
# answer's status line is 200. (The daemon has no built-in probe subcommand yet; if it gains
# one, use it in the Dockerfile instead and drop this script.)
set -u
listen="${NEON_STEWARD_LISTEN:-127.0.0.1:9187}"
port="${listen##*:}"
[[ "$port" =~ ^[0-9]+$ ]] || { echo "healthcheck: cannot read a port from NEON_STEWARD_LISTEN=$listen" >&2; exit 1; }
exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
printf 'GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3
IFS= read -r -t 5 status <&3 || { echo "healthcheck: no answer on port $port" >&2; exit 1; }
exec 3<&-
status="${status%$'\r'}"
if [[ "$status" =~ ^HTTP/1\.[01]\ 200( |$) ]]; then
    exit 0
fi
echo "healthcheck: /healthz answered: $status" >&2
exit 1

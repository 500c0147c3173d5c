#!/bin/sh
# Install and start a Docker Engine for the docker driver's tests. Idempotent: a daemon
# already answering on the default socket is left alone.
#
# Packages: Debian `docker.io` (dockerd, containerd, runc) and `busybox-static` (the test
# image is `docker import`ed from a busybox rootfs; no registry is reachable).
#
# The daemon must not disturb the other tests on this machine, so it runs with
#   --iptables=false --ip6tables=false  no DOCKER chains, FORWARD policy untouched
#   --ip-forward=false                  net.ipv4.ip_forward left as it is
#   --bridge=none                       no docker0; test containers use --network host/none
# These flags match DOCKERD_FLAGS in tests/integration/dockerlab.py.
set -eu

SOCK=/var/run/docker.sock
LOG=${CHAOSLAB_DOCKERD_LOG:-/var/log/chaoslab-dockerd.log}

answers() {
    # `docker version` needs the daemon; the static client in /usr/local/bin or Debian's both work.
    docker -H "unix://$SOCK" version --format '{{.Server.Version}}' >/dev/null 2>&1
}

if ! command -v dockerd >/dev/null 2>&1 || ! command -v busybox >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq docker.io busybox-static
fi

if answers; then
    echo "docker-up: dockerd already answering on $SOCK"
    exit 0
fi

# A stale pidfile from a killed daemon makes dockerd refuse to start.
if [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
    rm -f /var/run/docker.pid
fi

setsid dockerd \
    --host "unix://$SOCK" \
    --pidfile /var/run/docker.pid \
    --iptables=false --ip6tables=false --ip-forward=false --bridge=none \
    >"$LOG" 2>&1 </dev/null &

i=0
while ! answers; do
    i=$((i + 1))
    if [ "$i" -gt 60 ]; then
        echo "docker-up: dockerd did not answer within 30 s; log follows" >&2
        tail -n 40 "$LOG" >&2 || true
        exit 1
    fi
    sleep 0.5
done
echo "docker-up: dockerd $(docker -H "unix://$SOCK" version --format '{{.Server.Version}}') up (pid $(cat /var/run/docker.pid))"

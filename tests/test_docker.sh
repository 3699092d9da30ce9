#!/usr/bin/env bash
#  test_docker.sh — builds docker/Dockerfile and runs the image, where a
#  container engine can run a container (make test-docker, part of make
#  test; there the image compiles FAISS's C API and faissproxy: many
#  minutes on 2 cores).
#
#  Skips, saying why (a skip is not a pass), when no engine (docker or
#  podman) can run a container here, or when the base image is missing:
#  FPX_DOCKER_BASE (default debian:bookworm, else a local
#  debian:bookworm-local) must be present or pullable.
#  Without a registry, make one from Debian's mirror (debootstrap minbase,
#  the root make test-dist keeps):
#      scripts/minbase-root.sh build/deps/minbase-root
#      tar -C build/deps/minbase-root -c . | docker import - debian:bookworm-local
#      FPX_DOCKER_BASE=debian:bookworm-local make test-docker
#  FPX_DOCKER_ENGINE picks the engine; FPX_DOCKER_ARGS adds arguments to
#  every engine command (podman on cgroup v1: --runtime runc).
#  Checks: the image builds; the container runs as uid 10001; a server
#  answers with a key from a mounted keys file; an index created survives a container restart (the data
#  volume); the HEALTHCHECK passes. Prints "N passed, M failed" last.
set -u

root=$(cd "$(dirname "$0")/.." && pwd)
cli="$root/build/bin/faissproxy"
work=$(mktemp -d /tmp/fpx-docker.XXXXXX)
. "$root/tests/daemon_lib.sh"
name="fpx-test-$$"
base=${FPX_DOCKER_BASE:-debian:bookworm}
image="faissproxy:test-$$"
read -r -a extra <<< "${FPX_DOCKER_ARGS:-}"

engine=${FPX_DOCKER_ENGINE:-}
if [ -z "$engine" ]; then
    for candidate in docker podman; do
        if command -v "$candidate" >/dev/null && timeout 30 "$candidate" info >/dev/null 2>&1; then
            engine=$candidate
            break
        fi
    done
fi
e () { "$engine" "${extra[@]}" "$@"; }
#  et SECONDS ARGS…: e, killed after SECONDS.
et () { local limit=$1; shift; timeout "$limit" "$engine" "${extra[@]}" "$@"; }
cleanup () {
    if [ -n "$engine" ]; then
        e rm -f "$name" >/dev/null 2>&1
        e volume rm -f "$name-data" >/dev/null 2>&1
        e rmi -f "$image" >/dev/null 2>&1
    fi
    rm -rf "$work"
}
trap cleanup EXIT

if [ -z "$engine" ]; then
    skip "docker" "no working container engine (docker info / podman info fail or neither is installed)"
    summary
    exit 0
fi
has_image () { e image exists "$1" >/dev/null 2>&1 || e image inspect "$1" >/dev/null 2>&1; }
if [ -z "${FPX_DOCKER_BASE:-}" ] && ! has_image "$base" && has_image debian:bookworm-local; then
    base=debian:bookworm-local
fi
if ! has_image "$base" \
   && ! et 120 pull -q "$base" >/dev/null 2>&1; then
    skip "docker" "no base image $base and none can be pulled (see this script's comment)"
    summary
    exit 0
fi
if ! out=$(et 120 run --rm --network=host "$base" true 2>&1); then
    skip "docker" "$engine cannot run a container here: $out"
    summary
    exit 0
fi
[ -x "$cli" ] || { fail "docker.cli" "$cli is missing: make all first"; summary; exit 1; }

format=()
[ "$engine" = podman ] && format=(--format docker)     #  OCI images drop HEALTHCHECK
if et 3600 build "${format[@]}" --network=host --build-arg BASE="$base" \
     -f "$root/docker/Dockerfile" -t "$image" "$root" >"$work/build.log" 2>&1; then
    ok "docker.build"
else
    fail "docker.build" "$(tail -n 5 "$work/build.log")"
    summary
    exit 1
fi

keygen=$("$cli" keygen dock write 2>/dev/null)
key=$(echo "$keygen" | sed -n 's/^FAISS_PROXY_API_KEY=//p')
echo "$keygen" | grep '^dock write ' > "$work/keys"
chmod 600 "$work/keys"
chown 10001 "$work/keys" 2>/dev/null

#  start: the image's own bind (tcp://0.0.0.0:5555, which its HEALTHCHECK
#  pings) published on a free loopback port.
start_container () {
    for _ in $(seq 10); do
        port=$((7000 + RANDOM % 1000))
        endpoint="tcp://127.0.0.1:$port"
        e rm -f "$name" >/dev/null 2>&1
        e run -d --name "$name" -p "127.0.0.1:$port:5555" --health-interval 2s \
            -v "$name-data:/var/lib/faissproxy" -v "$work/keys:/etc/faissproxy/keys:ro" \
            "$image" >/dev/null 2>&1 || continue
        for _ in $(seq 100); do
            ping_server "$endpoint" "$key" 300 && return 0
            [ "$(e inspect -f '{{.State.Running}}' "$name" 2>/dev/null)" = true ] || break
            sleep 0.2
        done
    done
    return 1
}
if start_container; then
    ok "docker.serves"
else
    fail "docker.serves" "$(e logs "$name" 2>&1 | tail -n 5)"
    summary
    exit 1
fi
uid=$(e exec "$name" id -u 2>&1)
[ "$uid" = 10001 ] && ok "docker.non_root" || fail "docker.non_root" "runs as uid '$uid'"

"$cli" --server "$endpoint" --api-key "$key" create kept 8 Flat >/dev/null 2>&1
e stop -t 60 "$name" >/dev/null 2>&1
if start_container && "$cli" --server "$endpoint" --api-key "$key" list 2>/dev/null | grep -qx kept; then
    ok "docker.volume"
else
    fail "docker.volume" "index 'kept' not listed after a restart"
fi

healthy=""
for _ in $(seq 60); do
    if [ "$engine" = podman ]; then
        e healthcheck run "$name" >/dev/null 2>&1 && healthy=yes && break
    else
        [ "$(e inspect -f '{{.State.Health.Status}}' "$name" 2>/dev/null)" = healthy ] && healthy=yes && break
    fi
    sleep 1
done
[ -n "$healthy" ] && ok "docker.healthcheck" || fail "docker.healthcheck" "never healthy"

summary

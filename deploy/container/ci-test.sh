#!/usr/bin/env bash
# The container image, built and run for real (called by .ci/run; see deploy/README.md,
# "What CI checks"). Fully offline: the base image is made from Debian packages with
# mmdebstrap and `docker import`, the binary is the production build made outside the image.
#
#   deploy/container/ci-test.sh --sim PATH/neon-sim [--demo-bin PATH/neon-steward] [--keep-base]
#                               [--base-tar TAR]
#   deploy/container/ci-test.sh --prepare-base TAR
#
# --prepare-base only installs what the test needs and makes the base's root filesystem
# (mmdebstrap) into TAR, then exits: .ci/run does that in the background while the tests
# build, and passes the same TAR as --base-tar, which the test then imports instead of
# running mmdebstrap itself.
#
# By default dockerd starts on an empty data root (/var/lib/neon-steward-ci-docker), so the base
# image is made every time, and the data root is removed at the end. --keep-base (for local
# iterations) keeps it and reuses the base image an earlier run made.
#
# Needs root on Debian bookworm with apt reachable; installs docker.io and mmdebstrap if
# missing. It starts its own dockerd (own socket, pid file and data root; no bridge, no
# iptables: the test uses the host network) and stops it on exit, whatever happened.
#
# It checks, failing on the first miss:
#   - target/release/neon-steward holds no emulator (no neon-sim routes, fault injector or
#     OpenAPI document), with --demo-bin as the positive control that the markers are right;
#   - the image builds from the Dockerfile's `prebuilt` stage on the local base, has no
#     compiler or cargo, and its `demo` says it is not in this build;
#   - run as in deploy/README.md (its non-root user, read-only root filesystem, all
#     capabilities dropped, the policy mounted, the API key a mounted secret file, host
#     network) against `neon-sim serve` on the host: HEALTHCHECK becomes healthy, /readyz
#     and /metrics answer, and every job (one of each kind) succeeds at least once;
#   - `docker stop` ends it within its grace period with exit code 0, and `history` (run
#     from the image on the same volume) shows every run finished or interrupted, none lost.
# Prints the image size (recorded in docs/BENCHMARKS.md) and the wall time of each step.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
sim_bin=""
demo_bin=""
keep_base=0
base_tar=""
prepare_base=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --sim) sim_bin="${2:?--sim needs a path}"; shift 2 ;;
        --demo-bin) demo_bin="${2:?--demo-bin needs a path}"; shift 2 ;;
        --keep-base) keep_base=1; shift ;;
        --base-tar) base_tar="${2:?--base-tar needs a path}"; shift 2 ;;
        --prepare-base) prepare_base="${2:?--prepare-base needs a path}"; shift 2 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
if [[ -z "$prepare_base" ]]; then
[[ -x "$sim_bin" ]] || { echo "ci-test: --sim PATH to the neon-sim binary is required" >&2; exit 2; }
bin="$root/target/release/neon-steward"
[[ -x "$bin" ]] || {
    echo "ci-test: $bin is missing: cargo build --release --locked --no-default-features --bin neon-steward" >&2
    exit 2
}
fi

image="neon-steward:ci"
base="neon-steward-base:bookworm"
name="neon-steward-ci-$$"
t0=$SECONDS
step() { echo; echo "=== container: $* (t=$((SECONDS - t0))s)"; }
fail() { echo "FAIL: container: $*" >&2; exit 1; }

# The base's root filesystem from Debian packages. No documentation, manual pages or
# translations: nothing in the image reads them.
make_rootfs() {
    mmdebstrap --quiet --variant=minbase --format=tar \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/info/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
        bookworm "$1"
}

if [[ -z "$prepare_base" ]]; then
step "the production binary holds no emulator"
# Strings only neon-sim has: its admin and fault routes, the fault injector's and the
# validator's messages, and the OpenAPI document's description.
markers=('/_sim/faults' 'The Neon API allows you to access and manage Neon programmatically'
         ' (injected fault)' 'a status fault needs a 4xx or 5xx status'
         'the OpenAPI document has no `paths` object' 'only local `$ref`s are supported')
markers_in() { local f="$1" m n=0; for m in "${markers[@]}"; do grep -aqF "$m" "$f" && n=$((n + 1)); done; echo "$n"; }
found="$(markers_in "$bin")"
[[ $found == 0 ]] || fail "$bin contains $found neon-sim marker(s): build it with --no-default-features"
if [[ -n "$demo_bin" ]]; then
    # The same markers must be found in a binary that has the emulator, or they prove nothing.
    control="$(markers_in "$demo_bin")"
    [[ $control -ge 4 ]] || fail "only $control of ${#markers[@]} markers found in $demo_bin (with demo): update the markers"
    echo "no emulator marker in $bin ($(du -k "$bin" | cut -f1) KiB); $control of ${#markers[@]} in $demo_bin ($(du -k "$demo_bin" | cut -f1) KiB)"
else
    echo "no emulator marker in $bin ($(du -k "$bin" | cut -f1) KiB)"
fi
fi

step "installing docker.io and mmdebstrap"
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
if [[ ${#missing[@]} -gt 0 ]]; then
    [[ $(id -u) -eq 0 ]] || fail "need root to apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [[ -n "$prepare_base" ]]; then
    step "base root filesystem into $prepare_base (mmdebstrap minbase)"
    make_rootfs "$prepare_base.partial"
    mv "$prepare_base.partial" "$prepare_base"
    echo "base root filesystem: $(du -k "$prepare_base" | cut -f1) KiB"
    exit 0
fi
# docker.io's own client (a different `docker` may come first on PATH).
docker=/usr/bin/docker
[[ -x $docker ]] || docker="$(command -v docker)"
work="$(mktemp -d)"
sim_pid=""
dockerd_pid=""
run_dir="/run/neon-steward-ci-docker"
data_root="/var/lib/neon-steward-ci-docker"
export DOCKER_HOST="unix://$run_dir/docker.sock"
cleanup() {
    local rc=$?
    set +e
    if [[ -n "$dockerd_pid" ]]; then
        "$docker" rm -f "$name" >/dev/null 2>&1
        kill "$dockerd_pid" 2>/dev/null
        for _ in $(seq 1 30); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 1; done
        kill -0 "$dockerd_pid" 2>/dev/null && { echo "dockerd did not stop; killing it"; kill -KILL "$dockerd_pid"; }
        # dockerd leaves its default network namespace mounted under its exec root.
        awk -v d="$run_dir/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r | xargs -r umount
        if [[ $keep_base == 0 ]] && ! kill -0 "$dockerd_pid" 2>/dev/null; then rm -rf "$data_root"; fi
    fi
    [[ -n "$sim_pid" ]] && kill -INT "$sim_pid" 2>/dev/null && wait "$sim_pid" 2>/dev/null
    if [[ $rc -ne 0 ]]; then
        for f in dockerd.log sim.log; do [[ -s "$work/$f" ]] && { echo "--- $f (tail)"; tail -n 30 "$work/$f"; }; done
    fi
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT

step "starting dockerd"
mkdir -p "$run_dir"
[[ $keep_base == 1 ]] || rm -rf "$data_root"
dockerd --host "$DOCKER_HOST" --pidfile "$run_dir/dockerd.pid" --exec-root "$run_dir/exec" \
    --data-root "$data_root" --bridge=none --iptables=false \
    >"$work/dockerd.log" 2>&1 &
dockerd_pid=$!
for _ in $(seq 1 60); do
    "$docker" version >/dev/null 2>&1 && break
    kill -0 "$dockerd_pid" 2>/dev/null || fail "dockerd exited at start"
    sleep 0.5
done
"$docker" version --format 'docker engine {{.Server.Version}}, client {{.Client.Version}}' \
    || fail "dockerd did not answer within 30 s"

step "base image $base from Debian packages (mmdebstrap minbase + docker import)"
if "$docker" image inspect "$base" >/dev/null 2>&1; then
    echo "reusing $base from an earlier run (--keep-base)"
elif [[ -n "$base_tar" ]]; then
    [[ -s "$base_tar" ]] || fail "--base-tar $base_tar is missing or empty (made by --prepare-base)"
    echo "importing the root filesystem --prepare-base made ($base_tar)"
    "$docker" import "$base_tar" "$base" >/dev/null
else
    make_rootfs "$work/rootfs.tar"
    "$docker" import "$work/rootfs.tar" "$base" >/dev/null
    rm -f "$work/rootfs.tar"
fi

step "building $image from the prebuilt binary"
DOCKER_BUILDKIT=1 "$docker" build --quiet --network none -f deploy/container/Dockerfile \
    --build-arg BINARY=prebuilt --build-arg RUNTIME_IMAGE="$base" -t "$image" . >/dev/null
size="$("$docker" image inspect --format '{{.Size}}' "$image")"
base_size="$("$docker" image inspect --format '{{.Size}}' "$base")"
echo "image size: $image $((size / 1024 / 1024)) MiB ($size bytes; base $base $((base_size / 1024 / 1024)) MiB)"
user="$("$docker" image inspect --format '{{.Config.User}}' "$image")"
[[ $user == 65532:65532 ]] || fail "the image runs as '$user', not 65532:65532"
# No toolchain in the image.
"$docker" run --rm --network none --entrypoint /bin/bash "$image" -c \
    'for t in cc gcc rustc cargo neon-sim; do if command -v "$t"; then exit 1; fi; done' \
    || fail "the image has a compiler, cargo or neon-sim"
# The production binary's demo says why it is not there (and --help does not offer it).
demo_rc=0
"$docker" run --rm --network none "$image" demo >"$work/demo.out" 2>&1 || demo_rc=$?
[[ $demo_rc == 2 ]] && grep -q 'built without the `demo` cargo feature' "$work/demo.out" \
    || { cat "$work/demo.out"; fail "'demo' in the image exited $demo_rc without the expected message"; }
if "$docker" run --rm --network none "$image" --help | grep -qE '^ +demo '; then
    fail "--help of the production binary lists demo"
fi

step "neon-sim serve on the host"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
sim_port="$(free_port)"
key="ci-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
"$sim_bin" serve --port "$sim_port" --api-key "$key" --projects 4 --orgs 1 \
    --operation-duration 1s >"$work/sim.log" 2>&1 &
sim_pid=$!
for _ in $(seq 1 50); do grep -q '^neon-sim listening' "$work/sim.log" && break; sleep 0.2; done
grep -q '^neon-sim listening' "$work/sim.log" || fail "neon-sim did not start"

step "running the image (non-root, read-only, policy and key mounted, host network)"
listen_port="$(free_port)"
mkdir -p "$work/secrets"
cat >"$work/config.toml" <<EOF
# One job of each kind, on short intervals, against neon-sim on the host.
[api]
base_url = "http://127.0.0.1:$sim_port/api/v2"
# Longer than the image's grace period and cancel wait, so a hung request outlives both.
timeout = "60s"

[defaults]
timezone = "UTC"

[[jobs]]
name = "snapshots"
kind = "snapshot_branches"
every = "5s"
name_template = "{job}-{branch}-{date}-{time}"
[jobs.branches]
default = true
[jobs.retention]
keep_last = 2

[[jobs]]
name = "expire-previews"
kind = "expire_branches"
every = "5s"
ttl = "7d"
mode = "delete"
[jobs.branches]
names = ["preview/*"]
default = false

[[jobs]]
name = "suspend-idle"
kind = "suspend_computes"
every = "5s"
idle_for = "30m"

[[jobs]]
name = "consumption"
kind = "collect_consumption"
every = "5s"
granularity = "hourly"
endpoint = "legacy"
metrics = ["active_time_seconds", "compute_time_seconds"]
EOF
chmod 0644 "$work/config.toml"
# The key as a secret file readable by the image's group only, never an environment variable.
printf '%s' "$key" >"$work/secrets/neon-api-key"
chgrp 65532 "$work/secrets/neon-api-key"
chmod 0440 "$work/secrets/neon-api-key"
install -d -o 65532 -g 65532 -m 0700 "$work/state"
chmod 0755 "$work"
mounts=(-v "$work/config.toml:/etc/neon-steward/config.toml:ro"
        -v "$work/secrets/neon-api-key:/run/secrets/neon-api-key:ro"
        -v "$work/state:/var/lib/neon-steward")
# As deploy/README.md's run command, with the host network instead of -p (neon-sim listens
# on the host's loopback) and a faster health-check interval than the image's 30 s.
"$docker" run -d --name "$name" --network host \
    --read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges \
    "${mounts[@]}" -e NEON_STEWARD_LISTEN="127.0.0.1:$listen_port" \
    --health-interval 2s "$image" >/dev/null
show_logs() { echo "--- container logs (tail)"; "$docker" logs "$name" 2>&1 | tail -n 40; }
state() { "$docker" inspect --format "$1" "$name"; }
[[ "$(state '{{.HostConfig.ReadonlyRootfs}}')" == true ]] || fail "root filesystem is not read-only"
"$docker" exec "$name" sh -c 'test "$(id -u):$(id -g)" = 65532:65532' || { show_logs; fail "not running as 65532:65532"; }

# Until healthy, /readyz and /metrics answer, and every job has succeeded once (90 s at most).
python3 - "127.0.0.1:$listen_port" snapshots expire-previews suspend-idle consumption <<'PY' \
    || { show_logs; fail "the daemon in the container did not get there"; }
import sys, time, urllib.request
addr, jobs = sys.argv[1], sys.argv[2:]
deadline = time.monotonic() + 90
missing = jobs
while time.monotonic() < deadline:
    try:
        ready = urllib.request.urlopen(f"http://{addr}/readyz", timeout=2).status
        body = urllib.request.urlopen(f"http://{addr}/metrics", timeout=2).read().decode()
        missing = [j for j in jobs
                   if f'neon_steward_job_last_success_timestamp_seconds{{job_name="{j}"}}' not in body]
        if ready == 200 and not missing:
            print(f"/readyz 200, /metrics: every job succeeded at least once ({len(body)} bytes)")
            sys.exit(0)
    except OSError:
        pass
    time.sleep(1)
sys.exit(f"after 90 s, jobs without a success in /metrics: {missing}")
PY
for _ in $(seq 1 30); do
    health="$(state '{{.State.Health.Status}}')"
    [[ $health == healthy ]] && break
    sleep 1
done
[[ $health == healthy ]] || { show_logs; fail "HEALTHCHECK status is '$health', not healthy"; }
echo "HEALTHCHECK: healthy"

step "a run in flight: neon-sim stops answering, then docker stop"
# Every API request now hangs, so the next run cannot finish within the grace period: docker
# stop must still end the container in time, with exit 0 and that run recorded interrupted.
python3 - "127.0.0.1:$sim_port" "127.0.0.1:$listen_port" <<'PY' || { show_logs; fail "no run got stuck on the hung API"; }
import json, sys, time, urllib.request
sim, daemon = sys.argv[1], sys.argv[2]
rule = {"path_prefix": "/projects", "fault": {"kind": "hang"}}
req = urllib.request.Request(f"http://{sim}/_sim/faults", data=json.dumps(rule).encode(),
                             headers={"content-type": "application/json"}, method="POST")
urllib.request.urlopen(req, timeout=5)
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    body = urllib.request.urlopen(f"http://{daemon}/metrics", timeout=2).read().decode()
    running = [l for l in body.splitlines()
               if l.startswith("neon_steward_job_running{") and not l.endswith(" 0")]
    if running:
        print("in flight:", ", ".join(running))
        sys.exit(0)
    time.sleep(0.5)
sys.exit("no run in progress 30 s after the API started hanging")
PY
step "docker stop (SIGTERM, 10 s before SIGKILL)"
stop_started=$SECONDS
"$docker" stop "$name" >/dev/null
took=$((SECONDS - stop_started))
exit_code="$(state '{{.State.ExitCode}}')"
oom="$(state '{{.State.OOMKilled}}')"
"$docker" logs "$name" >"$work/container.log" 2>&1
echo "stopped in ${took}s with exit code $exit_code"
[[ $exit_code == 0 && $oom == false ]] || { tail -n 40 "$work/container.log"; fail "exit code $exit_code after docker stop (137: killed after the timeout)"; }
grep -q 'neon-steward stopped' "$work/container.log" || { tail -n 40 "$work/container.log"; fail "no 'neon-steward stopped' in the logs"; }
if grep -qF "$key" "$work/container.log"; then fail "the API key appears in the container's logs"; fi

step "history from the same volume"
"$docker" run --rm --network none --read-only "${mounts[@]}" "$image" history --limit 500 --output json \
    >"$work/history.json" || fail "history failed"
python3 - "$work/history.json" snapshots expire-previews suspend-idle consumption <<'PY' || fail "the recorded runs are not as expected"
import collections, json, sys
runs, jobs = json.load(open(sys.argv[1])), sys.argv[2:]
by = collections.defaultdict(collections.Counter)
for r in runs:
    by[r["job"]][r["status"]] += 1
for j in jobs:
    print(f"  {j}: {dict(by[j])}")
# Against a healthy emulator every run succeeds (or is a skipped tick); the one hung at
# docker stop is interrupted. A `running` run would be one the shutdown lost.
odd = [r for r in runs if r["status"] not in ("succeeded", "interrupted", "skipped")]
if odd:
    sys.exit(f"runs neither finished nor interrupted: {odd}")
if any(by[j]["succeeded"] == 0 for j in jobs):
    sys.exit("a job has no succeeded run")
if sum(by[j]["interrupted"] for j in jobs) == 0:
    sys.exit("the run in flight at docker stop is not recorded as interrupted")
print(f"{len(runs)} runs recorded, every one finished or interrupted")
PY
"$docker" rm "$name" >/dev/null
step "passed"

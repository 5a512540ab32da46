#!/usr/bin/env bash
# Builds the CPU image (top-level Dockerfile) with podman and smoke-tests it, on a machine that has
# no Docker engine and no reachable container registry (Debian mirror, crates.io and PyPI only).
#
#   sudo docker/test-image.sh          # from the repository root (or anywhere: it cd's there)
#   docker/test-image.sh --list-missing # only prints the tools step 1 would install
#
# 1. installs podman, debootstrap, jq and curl if missing (apt-get);
# 2. makes the two base images locally if podman lacks them:
#      docker.io/library/debian:bookworm-slim  debootstrap --variant=minbase bookworm with the
#                                              official images' apt/dpkg config (no apt caches;
#                                              slim: no docs, man pages, locales), imported;
#      docker.io/library/rust:1.95-bookworm    the same rootfs plus gcc/libc6-dev/ca-certificates
#                                              and this machine's Rust 1.95.0 toolchain (rustup's
#                                              copy, docs left out), laid out and with ENV as the
#                                              official image (RUSTUP_HOME, CARGO_HOME, PATH),
#                                              and the CAs this machine trusts beyond Debian's
#                                              (a TLS-intercepting egress proxy's: without them
#                                              pip and cargo fail certificate verification);
#    the debootstrap rootfs are cached under .cache/container/ (gitignored, and dockerignored);
# 3. builds t5serve:test (docker format, so that HEALTHCHECK is kept; OCI format drops it);
# 4. unpacks the image's filesystem (podman create + export), runs its ENTRYPOINT + CMD with the
#    image's ENV under chroot as the image's USER, with /proc, /sys (read-only) and a minimal /dev;
#    T5SERVE_PORT is set to a free port and T5SERVE_HOST to 127.0.0.1 (chroot shares the host's
#    network, so the server is not exposed on every interface while the test runs);
# 5. waits for /health/ready = 200, checks /v1/generate answers "viertausendzweihundert", runs the
#    image's HEALTHCHECK command in the chroot (its port rewritten to the test port), checks the
#    USER is not root and the HEALTHCHECK is set; then SIGTERM, the exit status, and cleanup.
#
# `podman run` cannot work here (crun: cgroups/rlimits), hence the chroot.
# Environment: IMAGE (default t5serve:test), PODMAN_STORAGE_DRIVER (default vfs, known to work
# here; a store keeps the driver it was made with, so another driver needs its own PODMAN_ROOT:
# PODMAN_STORAGE_DRIVER=overlay PODMAN_ROOT=/var/lib/containers-overlay also works here, faster
# and with less disk), DEBIAN_MIRROR,
# RUST_TOOLCHAIN_DIR (default $RUSTUP_HOME/toolchains/1.95.0-x86_64-unknown-linux-gnu),
# REBUILD_BASE=1 (remake both base images), NO_CACHE=1 (podman build --no-cache),
# PRUNE_STALE=0 (keep untagged step images of earlier builds; by default they are removed),
# READY_TIMEOUT (seconds, default 180).
set -euo pipefail

cd "$(dirname "$0")/.."
REPO="$(pwd)"

IMAGE="${IMAGE:-t5serve:test}"
DRIVER="${PODMAN_STORAGE_DRIVER:-vfs}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SUITE=bookworm
RUST_VERSION=1.95.0
TOOLCHAIN_NAME="$RUST_VERSION-x86_64-unknown-linux-gnu"
TOOLCHAIN="${RUST_TOOLCHAIN_DIR:-${RUSTUP_HOME:-$HOME/.rustup}/toolchains/$TOOLCHAIN_NAME}"
SLIM_IMAGE=docker.io/library/debian:bookworm-slim
RUST_IMAGE=docker.io/library/rust:1.95-bookworm
CACHE="$REPO/.cache/container"
READY_TIMEOUT="${READY_TIMEOUT:-180}"
EXPECTED=viertausendzweihundert
PROMPT="translate English to German: four thousand two hundred"
BASE_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

PODMAN_GLOBAL=(--storage-driver "$DRIVER")
if [ -n "${PODMAN_ROOT:-}" ]; then
  PODMAN_GLOBAL+=(--root "$PODMAN_ROOT" --runroot "/run/$(basename "$PODMAN_ROOT")-runroot")
fi
podman() { command podman "${PODMAN_GLOBAL[@]}" "$@"; }
log() { printf '\n==> %s\n' "$*"; }
die() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

# --- timings -------------------------------------------------------------------------------
T0=$(date +%s.%N)
PHASES=()
phase_start() { PHASE_NAME="$1"; PHASE_T=$(date +%s.%N); log "$1"; }
phase_end() {
  local dt
  dt=$(awk -v a="$PHASE_T" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  PHASES+=("$(printf '%-62s %7ss' "$PHASE_NAME" "$dt")")
  printf -- '--- %s: %ss\n' "$PHASE_NAME" "$dt"
}
print_timings() {
  local total
  total=$(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  printf '\nTimings\n'
  printf '  %s\n' "${PHASES[@]}"
  printf '  %-62s %7ss\n' total "$total"
}

# --- cleanup (server, mounts, unpacked rootfs, temporary container) -------------------------
SMOKE=""
CTR=""
SERVER_PID=""
CHROOT_MOUNTS=()
cleanup() {
  local rc=$?
  set +e
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -KILL "$SERVER_PID" 2>/dev/null; wait "$SERVER_PID" 2>/dev/null
  fi
  local i
  for ((i = ${#CHROOT_MOUNTS[@]} - 1; i >= 0; i--)); do
    mountpoint -q "${CHROOT_MOUNTS[i]}" && umount -l "${CHROOT_MOUNTS[i]}"
  done
  if [ -n "$SMOKE" ] && [ -d "$SMOKE" ]; then
    if grep -q " $SMOKE/" /proc/mounts; then
      echo "WARNING: mounts left under $SMOKE; not removing it" >&2
    else
      rm -rf --one-file-system "$SMOKE"
    fi
  fi
  [ -n "$CTR" ] && podman rm -f "$CTR" >/dev/null 2>&1
  [ -n "${TMPD:-}" ] && rm -rf "$TMPD"
  [ "$rc" -ne 0 ] && echo "test-image.sh: FAILED (exit $rc)" >&2
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The tools, looked up as binaries on PATH (`type -P`): `command -v` would also find the
# `podman` function above, so that podman was never installed on a machine without it.
missing=()
for tool in podman:podman debootstrap:debootstrap jq:jq curl:curl; do
  type -P "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
done
if [ "${1:-}" = --list-missing ]; then
  # What step 1 would install here (scripts/check_deploy.sh checks it against PATH), then stop.
  trap - EXIT
  echo "${missing[*]}"
  exit 0
fi

[ "$(id -u)" -eq 0 ] || die "needs root (podman with --isolation chroot, debootstrap, chroot, mount)"
TMPD="$(mktemp -d)"

# --- 1. tools --------------------------------------------------------------------------------
phase_start "tools (podman, debootstrap, jq, curl)"
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q "${missing[@]}"
fi
command podman --version
phase_end

# --- 2. base images --------------------------------------------------------------------------
mkdir -p "$CACHE/debs"

# Every function that writes into a rootfs checks first that it is one of ours, never the host's.
cached_rootfs() {
  case "$1" in "$CACHE"/rootfs-?*) ;; *) die "not a cached rootfs: '$1'" ;; esac
}

# debootstrap into $1 (cached; "$1.done" marks a complete one), extra packages in $2
make_rootfs() {
  local dir="$1" include="${2:-}"
  cached_rootfs "$dir"
  if [ -f "$dir.done" ] && [ -d "$dir" ]; then
    echo "rootfs $dir cached"
    return
  fi
  rm -rf --one-file-system "$dir"
  debootstrap --variant=minbase ${include:+--include="$include"} --cache-dir="$CACHE/debs" \
    "$SUITE" "$dir" "$MIRROR"
  # As the official image: bookworm, bookworm-updates and bookworm-security, deb822 format.
  rm -f "$dir/etc/apt/sources.list"
  cat > "$dir/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${MIRROR%/debian}/debian-security
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
  : > "$dir/etc/resolv.conf"   # the build injects its own
  touch "$dir.done"
}

# What Debian's official images add to a debootstrap (debuerreotype's minimizing config): apt
# keeps no package caches (without it /var/cache/apt/*.bin, ~80 MB, stays in every layer that ran
# apt-get) and fetches no translations; with "slim" (debian:*-slim) dpkg also leaves out docs,
# man pages and locales, and those already there go. Idempotent; refuses anything but a rootfs
# under $CACHE.
official_config() {
  local dir="$1" flavor="$2" d
  cached_rootfs "$dir"
  [ -d "$dir/etc/apt" ] || die "official_config: $dir is not a Debian rootfs"
  mkdir -p "$dir/etc/apt/apt.conf.d" "$dir/etc/dpkg/dpkg.cfg.d"
  local clean='"rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"'
  printf '%s\n' "DPkg::Post-Invoke { $clean; };" "APT::Update::Post-Invoke { $clean; };" \
    'Dir::Cache::pkgcache "";' 'Dir::Cache::srcpkgcache "";' > "$dir/etc/apt/apt.conf.d/docker-clean"
  printf '%s\n' 'Apt::AutoRemove::SuggestsImportant "false";' \
    > "$dir/etc/apt/apt.conf.d/docker-autoremove-suggests"
  printf '%s\n' 'Acquire::GzipIndexes "true";' > "$dir/etc/apt/apt.conf.d/docker-gzip-indexes"
  printf '%s\n' 'Acquire::Languages "none";' > "$dir/etc/apt/apt.conf.d/docker-no-languages"
  printf '%s\n' 'force-unsafe-io' > "$dir/etc/dpkg/dpkg.cfg.d/docker-apt-speedup"
  rm -f "$dir"/var/cache/apt/*.bin
  if [ "$flavor" = slim ]; then
    printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
      'path-exclude /usr/share/groff/*' 'path-exclude /usr/share/info/*' \
      'path-exclude /usr/share/linda/*' 'path-exclude /usr/share/lintian/*' \
      'path-exclude /usr/share/locale/*' 'path-exclude /usr/share/man/*' \
      > "$dir/etc/dpkg/dpkg.cfg.d/docker"
    find "$dir/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
    find "$dir/usr/share/doc" -mindepth 1 -type d -empty -delete
    for d in groff info linda lintian locale man; do
      if [ -d "$dir/usr/share/$d" ]; then find "$dir/usr/share/$d" -mindepth 1 -delete; fi
    done
  fi
}

# The CAs this machine trusts beyond Debian's bundle (e.g. a TLS-intercepting egress proxy's) go
# into the rootfs' /usr/local/share/ca-certificates, so that pip (PyPI) and cargo (crates.io) in
# the build stage verify what the host verifies. None on a machine without such a proxy.
add_host_cas() {
  local dir="$1" host_bundle="${HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}" n
  cached_rootfs "$dir"
  rm -f "$dir"/usr/local/share/ca-certificates/host-extra-*.crt
  quiet_update_ca "$dir" --fresh   # Debian's bundle alone
  [ -f "$host_bundle" ] || { echo "no $host_bundle: no host CAs added"; return; }
  awk -v out="$dir/usr/local/share/ca-certificates/host-extra-" '
    FNR == 1 { file++ }
    /-----BEGIN CERTIFICATE-----/ { cert = ""; incert = 1 }
    incert { cert = cert $0 "\n" }
    /-----END CERTIFICATE-----/ {
      incert = 0
      if (file == 1) known[cert] = 1
      else if (!(cert in known)) { n++; f = out n ".crt"; printf "%s", cert > f; close(f) }
    }' "$dir/etc/ssl/certs/ca-certificates.crt" "$host_bundle"
  n=$(find "$dir/usr/local/share/ca-certificates" -name 'host-extra-*.crt' | wc -l)
  echo "host CAs not in Debian's bundle, added to the image: $n"
  quiet_update_ca "$dir"
}
quiet_update_ca() {
  local dir="$1"; shift
  cached_rootfs "$dir"
  chroot "$dir" update-ca-certificates "$@" 2>&1 >/dev/null | { grep -v 'does not contain exactly one' || true; } >&2
}

# (untag, not rmi: images built on them keep them as parents, and rmi refuses those)
if [ "${REBUILD_BASE:-0}" = 1 ]; then
  for base in "$SLIM_IMAGE" "$RUST_IMAGE"; do
    podman image exists "$base" && podman untag "$base" "$base"
  done
fi

phase_start "base image $SLIM_IMAGE"
if podman image exists "$SLIM_IMAGE"; then
  echo "present"
else
  make_rootfs "$CACHE/rootfs-$SUITE-minbase"
  official_config "$CACHE/rootfs-$SUITE-minbase" slim
  tar -C "$CACHE/rootfs-$SUITE-minbase" --numeric-owner -c . \
    | podman import --change "ENV PATH=$BASE_PATH" --change 'CMD ["bash"]' \
        --message "debootstrap --variant=minbase $SUITE" - "$SLIM_IMAGE"
fi
phase_end

phase_start "base image $RUST_IMAGE (local stand-in)"
if podman image exists "$RUST_IMAGE"; then
  echo "present"
else
  [ -x "$TOOLCHAIN/bin/cargo" ] && [ -x "$TOOLCHAIN/bin/rustc" ] \
    || die "no Rust $RUST_VERSION toolchain at $TOOLCHAIN (rustup toolchain install $RUST_VERSION)"
  "$TOOLCHAIN/bin/rustc" --version | grep -q "^rustc $RUST_VERSION " \
    || die "$TOOLCHAIN is not Rust $RUST_VERSION"
  rootfs="$CACHE/rootfs-$SUITE-rust"
  make_rootfs "$rootfs" ca-certificates,gcc,libc6-dev,make,pkg-config
  official_config "$rootfs" full
  add_host_cas "$rootfs"
  # The toolchain goes where the official image has it; its docs (share/, ~800 MB) are left out.
  dest="usr/local/rustup/toolchains/$TOOLCHAIN_NAME"
  stage="$TMPD/rust-stage"
  mkdir -p "$stage/$dest" "$stage/usr/local/cargo/bin"
  for d in bin lib libexec etc; do
    [ -e "$TOOLCHAIN/$d" ] && cp -a "$TOOLCHAIN/$d" "$stage/$dest/"
  done
  # rustup's proxies are not there: cargo and rustc come straight from the toolchain on PATH.
  { tar -C "$rootfs" --numeric-owner -cf - . ; } > "$TMPD/rust.tar"
  # only paths the rootfs lacks: the same directory twice in one layer is refused
  tar -C "$stage" --numeric-owner --owner=0 --group=0 -rf "$TMPD/rust.tar" \
    ./usr/local/rustup ./usr/local/cargo
  rm -rf "$stage"
  podman import \
    --change "ENV RUSTUP_HOME=/usr/local/rustup" \
    --change "ENV CARGO_HOME=/usr/local/cargo" \
    --change "ENV RUST_VERSION=$RUST_VERSION" \
    --change "ENV PATH=/usr/local/cargo/bin:/$dest/bin:$BASE_PATH" \
    --change 'CMD ["bash"]' \
    --message "debootstrap minbase $SUITE + gcc + Rust $RUST_VERSION (stand-in for rust:1.95-bookworm)" \
    "$TMPD/rust.tar" "$RUST_IMAGE"
  rm -f "$TMPD/rust.tar"
fi
phase_end

# --- 3. build --------------------------------------------------------------------------------
phase_start "podman build $IMAGE"
build_args=(build --isolation chroot --format docker --pull=never -f Dockerfile -t "$IMAGE")
[ "${NO_CACHE:-0}" = 1 ] && build_args+=(--no-cache)
# each STEP line, and the line that ends it, carries the seconds since the build started
podman "${build_args[@]}" . 2>&1 | tee "$TMPD/build.log" | {
  b=$SECONDS
  while IFS= read -r line; do
    case "$line" in
      *"] STEP "*|"--> "*|*"COMMIT "*) printf '[+%4ss] %s\n' "$((SECONDS - b))" "$line" ;;
      *) printf '%s\n' "$line" ;;
    esac
  done
}
phase_end

# With vfs every layer is a whole copy of the filesystem (1-2 GB in the build stage), so each
# change to src/ leaves ~5 GB of stale untagged step images. Remove the untagged ones that this
# build did not produce or reuse (tagged images, and this build's cache, stay). PRUNE_STALE=0 keeps.
if [ "${PRUNE_STALE:-1}" = 1 ]; then
  phase_start "remove stale untagged build images"
  keep=" $(podman image inspect --format '{{.Id}}' "$IMAGE" "$SLIM_IMAGE" "$RUST_IMAGE" | cut -c1-11 | tr '\n' ' ')"
  keep+="$(grep -oE '^--> [0-9a-f]{11}' "$TMPD/build.log" | cut -c5- | tr '\n' ' ')"   # step images
  before=$(podman images -a -q | wc -l)
  # newest first, so that children go before their parents (rmi also drops untagged parents)
  while read -r id repo; do
    [ "$repo" = "<none>" ] || continue
    case "$keep" in *" ${id:0:11} "*) continue ;; esac
    podman rmi "$id" >/dev/null 2>&1 || true
  done < <(podman images -a --sort created --format '{{.ID}} {{.Repository}}')
  echo "removed $((before - $(podman images -a -q | wc -l))) stale images"
  phase_end
fi

# --- 4. inspect ------------------------------------------------------------------------------
phase_start "inspect image"
podman image inspect "$IMAGE" > "$TMPD/inspect.json"
cfg() { jq -c ".[0].Config.$1 // empty" "$TMPD/inspect.json"; }
img_user="$(jq -r '.[0].Config.User // ""' "$TMPD/inspect.json")"
img_workdir="$(jq -r '.[0].Config.WorkingDir // ""' "$TMPD/inspect.json")"
mapfile -t img_env < <(jq -r '.[0].Config.Env // [] | .[]' "$TMPD/inspect.json")
mapfile -t img_cmd < <(jq -r '((.[0].Config.Entrypoint // []) + (.[0].Config.Cmd // [])) | .[]' "$TMPD/inspect.json")
# podman keeps the docker-format HEALTHCHECK at the top level of its inspect output
img_health="$(jq -c '.[0].Healthcheck // .[0].Config.Healthcheck // empty' "$TMPD/inspect.json")"
img_size="$(jq -r '.[0].Size' "$TMPD/inspect.json")"
echo "User:        ${img_user:-<none>}"
echo "WorkingDir:  ${img_workdir:-<none>}"
echo "Entrypoint:  $(cfg Entrypoint)"
echo "Cmd:         $(cfg Cmd)"
echo "Env:";  printf '  %s\n' "${img_env[@]}"
echo "Healthcheck: ${img_health:-<none>}"
echo "Size:        $img_size bytes ($(awk -v s="$img_size" 'BEGIN { printf "%.1f MB", s / 1e6 }'))"
[ ${#img_cmd[@]} -gt 0 ] || die "the image has neither ENTRYPOINT nor CMD"
[ -n "$img_health" ] || die "no HEALTHCHECK in the image (built in OCI format?)"
health_kind="$(jq -r '.Test[0] // ""' <<<"$img_health")"
case "$health_kind" in
  CMD|CMD-SHELL) ;;
  *) die "HEALTHCHECK is not a command: $img_health" ;;
esac
[ -n "$img_user" ] || die "the image runs as root (no USER)"
phase_end

# --- 5. unpack -------------------------------------------------------------------------------
phase_start "unpack image filesystem"
SMOKE="$CACHE/smoke-rootfs.$$"
mkdir -p "$SMOKE"
CTR="t5serve-test-$$"
podman create --no-healthcheck --name "$CTR" "$IMAGE" >/dev/null
podman export "$CTR" | tar -C "$SMOKE" --numeric-owner -xpf -
podman rm "$CTR" >/dev/null
CTR=""
du -sh "$SMOKE" | awk '{ print "unpacked: " $1 }'

# USER name[:group] or uid[:gid], resolved in the image's own /etc/passwd and /etc/group
user_part="${img_user%%:*}"
group_part=""
[[ "$img_user" == *:* ]] && group_part="${img_user#*:}"
if [[ "$user_part" =~ ^[0-9]+$ ]]; then
  run_uid="$user_part"
  run_gid="$(awk -F: -v u="$run_uid" '$3 == u { print $4; exit }' "$SMOKE/etc/passwd")"
else
  run_uid="$(awk -F: -v u="$user_part" '$1 == u { print $3; exit }' "$SMOKE/etc/passwd")"
  run_gid="$(awk -F: -v u="$user_part" '$1 == u { print $4; exit }' "$SMOKE/etc/passwd")"
fi
[ -n "$run_uid" ] || die "USER $img_user is not in the image's /etc/passwd"
if [ -n "$group_part" ]; then
  if [[ "$group_part" =~ ^[0-9]+$ ]]; then run_gid="$group_part"
  else run_gid="$(awk -F: -v g="$group_part" '$1 == g { print $3; exit }' "$SMOKE/etc/group")"; fi
fi
run_gid="${run_gid:-$run_uid}"
[ "$run_uid" -ne 0 ] || die "the image's USER ($img_user) is root"
echo "runs as $img_user = uid $run_uid gid $run_gid (non-root)"
phase_end

# --- 6. run ----------------------------------------------------------------------------------
phase_start "start server (chroot) until /health/ready = 200"
mount -t proc proc "$SMOKE/proc";                               CHROOT_MOUNTS+=("$SMOKE/proc")
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$SMOKE/sys";    CHROOT_MOUNTS+=("$SMOKE/sys")
# a private /dev (tmpfs + the usual nodes), never a bind of the host's /dev
mount -t tmpfs -o mode=755,nosuid tmpfs "$SMOKE/dev";           CHROOT_MOUNTS+=("$SMOKE/dev")
mknod -m 666 "$SMOKE/dev/null" c 1 3
mknod -m 666 "$SMOKE/dev/zero" c 1 5
mknod -m 666 "$SMOKE/dev/full" c 1 7
mknod -m 666 "$SMOKE/dev/random" c 1 8
mknod -m 666 "$SMOKE/dev/urandom" c 1 9
mknod -m 666 "$SMOKE/dev/tty" c 5 0
mkdir -m 1777 "$SMOKE/dev/shm"
ln -s /proc/self/fd "$SMOKE/dev/fd"
ln -s /proc/self/fd/0 "$SMOKE/dev/stdin"
ln -s /proc/self/fd/1 "$SMOKE/dev/stdout"
ln -s /proc/self/fd/2 "$SMOKE/dev/stderr"
# name resolution for the chroot, as a container runtime would give it
cp /etc/resolv.conf "$SMOKE/etc/resolv.conf" 2>/dev/null || true
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' > "$SMOKE/etc/hosts"

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
PORT=""
for p in $(shuf -i 20000-60999 -n 50); do
  if port_free "$p"; then PORT="$p"; break; fi
done
[ -n "$PORT" ] || die "no free port found"

img_port=""
run_env=()
for kv in "${img_env[@]}"; do
  case "$kv" in
    T5SERVE_PORT=*) img_port="${kv#*=}" ;;
    T5SERVE_HOST=*) ;;
    *) run_env+=("$kv") ;;
  esac
done
home="$(awk -F: -v u="$run_uid" '$3 == u { print $6; exit }' "$SMOKE/etc/passwd")"
printf '%s\n' "${img_env[@]}" | grep -q '^HOME=' || run_env+=("HOME=${home:-/}")
run_env+=("HOSTNAME=t5serve-test" "T5SERVE_PORT=$PORT" "T5SERVE_HOST=127.0.0.1")
CHROOT_BIN="$(command -v chroot)"
SERVER_LOG="$TMPD/server.log"
launch=("${img_cmd[@]}")
if [ -n "$img_workdir" ] && [ "$img_workdir" != / ]; then
  launch=(/bin/sh -c 'cd "$0" && exec "$@"' "$img_workdir" "${img_cmd[@]}")
fi
echo "port $PORT; command: ${img_cmd[*]}"
env -i "${run_env[@]}" "$CHROOT_BIN" --userspec="$run_uid:$run_gid" --groups="$run_gid" \
  "$SMOKE" "${launch[@]}" > "$SERVER_LOG" 2>&1 &
SERVER_PID=$!

ready=""
code=""
deadline=$((SECONDS + READY_TIMEOUT))
while [ $SECONDS -lt $deadline ]; do
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    cat "$SERVER_LOG" >&2
    die "the server exited before it was ready"
  fi
  code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$PORT/health/ready" || true)"
  if [ "$code" = 200 ]; then ready=1; break; fi
  sleep 0.5
done
if [ -z "$ready" ]; then
  tail -50 "$SERVER_LOG" >&2
  die "/health/ready not 200 within ${READY_TIMEOUT}s (last: $code)"
fi
# the process must really run as the image's user
proc_uid="$(awk '/^Uid:/ { print $2 }' "/proc/$SERVER_PID/status")"
[ "$proc_uid" = "$run_uid" ] || die "server runs as uid $proc_uid, not $run_uid"
echo "ready; server pid $SERVER_PID runs as uid $proc_uid"
phase_end

# --- 7. checks -------------------------------------------------------------------------------
phase_start "requests (/v1/generate, HEALTHCHECK)"
body="$(jq -cn --arg p "$PROMPT" '{inputs: $p}')"
answer="$(curl -sS --max-time 60 -H 'content-type: application/json' -d "$body" \
  "http://127.0.0.1:$PORT/v1/generate")"
echo "/v1/generate -> $answer"
got="$(jq -r '.generated_text // empty' <<<"$answer" 2>/dev/null || true)"
[ "$got" = "$EXPECTED" ] || die "expected generated_text \"$EXPECTED\", got \"$got\""

# The image's HEALTHCHECK command, in the chroot as the image's user. It names the image's port
# (T5SERVE_PORT=$img_port), so that port is rewritten to the test's.
if [ "$health_kind" = CMD-SHELL ]; then
  hc=(/bin/sh -c "$(jq -r '.Test[1]' <<<"$img_health")")
else
  mapfile -t hc < <(jq -r '.Test[1:][]' <<<"$img_health")
fi
if [ -n "$img_port" ]; then
  for i in "${!hc[@]}"; do hc[i]="${hc[i]//:$img_port/:$PORT}"; done
fi
echo "HEALTHCHECK: ${hc[*]}"
env -i "${run_env[@]}" "$CHROOT_BIN" --userspec="$run_uid:$run_gid" --groups="$run_gid" \
  "$SMOKE" "${hc[@]}" || die "the image's HEALTHCHECK command failed"
echo
phase_end

# --- 8. stop ---------------------------------------------------------------------------------
phase_start "stop server (SIGTERM) and clean up"
kill -TERM "$SERVER_PID"
status=""
for _ in $(seq 1 80); do
  kill -0 "$SERVER_PID" 2>/dev/null || break
  sleep 0.5
done
if kill -0 "$SERVER_PID" 2>/dev/null; then
  tail -20 "$SERVER_LOG" >&2
  die "server still running 40s after SIGTERM"
fi
wait "$SERVER_PID" && status=0 || status=$?
SERVER_PID=""
[ "$status" = 0 ] || { tail -20 "$SERVER_LOG" >&2; die "server exited $status after SIGTERM"; }
echo "server exited 0; its log ends:"
tail -n 12 "$SERVER_LOG" | sed 's/^/  | /'
for ((i = ${#CHROOT_MOUNTS[@]} - 1; i >= 0; i--)); do umount "${CHROOT_MOUNTS[i]}"; done
CHROOT_MOUNTS=()
rm -rf --one-file-system "$SMOKE"
SMOKE=""
phase_end

podman images --filter "reference=$IMAGE"
printf '\nPASS: %s (%s, user %s, HEALTHCHECK set) answers "%s"\n' \
  "$IMAGE" "$(awk -v s="$img_size" 'BEGIN { printf "%.1f MB", s / 1e6 }')" "$img_user" "$EXPECTED"
print_timings

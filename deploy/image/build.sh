#!/usr/bin/env bash
# make image: build the repository's Dockerfile offline with buildah (no Docker daemon, no
# registry pulls), as localhost/beamscore:<version>.
#
#   1. a Debian bookworm rootfs by debootstrap (python3, venv, pip, CA certificates),
#      cached in $BUILD_DIR, imported as the local base image (FROM scratch + ADD);
#   2. local STAND-INS for BEAM_SDK_IMAGE and LAUNCHER_IMAGE (deploy/image/standin/): the
#      same paths, placeholder scripts; the production build uses the real images
#      (docs/dataflow.md);
#   3. the Dockerfile, with this host's pip configuration (index, mirrors, find-links,
#      constraints, CA bundle) as the build secret pip.conf and its local paths mounted
#      read-only, so pip in the build reaches the packages the way pip here does.
#
# Environment: BUILD_DIR (default /var/tmp/beamscore-image), IMAGE (default
# localhost/beamscore:<setup.py version>), DEBIAN_MIRROR (default: this host's apt source).
# Needs root, buildah and debootstrap (installed with apt-get when missing), ~6 GB of disk.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
HERE="$REPO/deploy/image"
BUILD_DIR=${BUILD_DIR:-/var/tmp/beamscore-image}
BUILDAH=(buildah --storage-driver vfs)

setup_value() {  # a top-level NAME = "value" or version="value" of setup.py
  sed -n -E "s/^ *$1 *= *\"([^\"]+)\".*/\1/p" "$REPO/setup.py" | head -n1
}
BEAM_VERSION=$(setup_value BEAM_VERSION)
VERSION=$(setup_value version)
IMAGE=${IMAGE:-localhost/beamscore:$VERSION}
BASE_IMAGE=localhost/beamscore-base:bookworm
SDK_STANDIN=localhost/beamscore-standin/beam_python3.11_sdk:$BEAM_VERSION
LAUNCHER_STANDIN=localhost/beamscore-standin/python311-template-launcher-base:latest
[ -n "$BEAM_VERSION" ] && [ -n "$VERSION" ] || { echo "build.sh: cannot read setup.py" >&2; exit 1; }

log() { printf '[build.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if [ "$(id -u)" != 0 ]; then
  echo "build.sh: needs root (debootstrap, buildah --isolation chroot)" >&2; exit 1
fi
missing=()
command -v buildah >/dev/null || missing+=(buildah)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi

mkdir -p "$BUILD_DIR"
free_gb() { df -Pk "$1" | awk 'NR==2 {print int($4 / 1048576)}'; }
free_gb=$(free_gb "$BUILD_DIR")
store_gb=$(free_gb /var/lib)  # buildah's storage: /var/lib/containers
log "free disk: $free_gb GB in $BUILD_DIR, $store_gb GB for buildah's storage"
if [ "$free_gb" -lt 6 ] || [ "$store_gb" -lt 6 ]; then
  echo "build.sh: needs about 6 GB free (vfs storage copies every layer)" >&2; exit 1
fi

# 1. The base: Debian bookworm by debootstrap, cached as rootfs.tar.
MIRROR=${DEBIAN_MIRROR:-$(sed -n -E 's/^URIs: *(http[^ ]*debian)\/?$/\1/p' \
  /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
if [ ! -s "$BUILD_DIR/rootfs.tar" ]; then
  log "debootstrap bookworm from $MIRROR"
  rm -rf "$BUILD_DIR/rootfs"
  debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    bookworm "$BUILD_DIR/rootfs" "$MIRROR"
  rm -rf "$BUILD_DIR"/rootfs/var/cache/apt/archives/*.deb "$BUILD_DIR"/rootfs/var/lib/apt/lists/*
  tar -C "$BUILD_DIR/rootfs" --numeric-owner -cf "$BUILD_DIR/rootfs.tar.part" .
  mv "$BUILD_DIR/rootfs.tar.part" "$BUILD_DIR/rootfs.tar"
  rm -rf "$BUILD_DIR/rootfs"
else
  log "cached base rootfs: $BUILD_DIR/rootfs.tar"
fi
if ! "${BUILDAH[@]}" inspect --type image "$BASE_IMAGE" >/dev/null 2>&1 \
   || [ "$BUILD_DIR/rootfs.tar" -nt "$BUILD_DIR/base.stamp" ]; then
  log "importing $BASE_IMAGE"
  mkdir -p "$BUILD_DIR/base"
  ln -f "$BUILD_DIR/rootfs.tar" "$BUILD_DIR/base/rootfs.tar"
  cat > "$BUILD_DIR/base/Containerfile" <<'EOF'
FROM scratch
LABEL org.opencontainers.image.title="beamscore offline base: Debian bookworm minbase + python3 (debootstrap)"
ADD rootfs.tar /
ENV LANG=C.UTF-8
CMD ["/bin/bash"]
EOF
  "${BUILDAH[@]}" bud --isolation chroot --pull-never -t "$BASE_IMAGE" \
    -f "$BUILD_DIR/base/Containerfile" "$BUILD_DIR/base"
  touch "$BUILD_DIR/base.stamp"
fi

# 2. Stand-ins for the two images the Dockerfile copies one path each from.
standin() {  # IMAGE CONTAINERFILE: (re)built when missing or its files changed
  local stamp="$BUILD_DIR/standin-$(basename "$2").stamp"
  if "${BUILDAH[@]}" inspect --type image "$1" >/dev/null 2>&1 && [ -e "$stamp" ] \
     && [ -z "$(find "$HERE/standin" -newer "$stamp")" ]; then
    log "stand-in $1 is up to date"; return
  fi
  log "stand-in $1"
  "${BUILDAH[@]}" rmi "$1" >/dev/null 2>&1 || true
  "${BUILDAH[@]}" bud --isolation chroot --pull-never -t "$1" -f "$HERE/standin/$2" "$HERE/standin"
  touch "$stamp"
}
standin "$SDK_STANDIN" Containerfile.beam-sdk
standin "$LAUNCHER_STANDIN" Containerfile.launcher

# 3. This host's pip configuration for the build: the effective settings of pip here
# (config files and PIP_* variables), the CA bundle copied in, local paths mounted.
PIP_CONF="$BUILD_DIR/pip.conf"
HOST_PY=$(command -v python3)
volumes=()
python3 - "$PIP_CONF" "$BUILD_DIR/ca.crt" > "$BUILD_DIR/pip-mounts" <<'EOF'
import configparser, os, shutil, subprocess, sys
from urllib.parse import urlsplit

conf_path, ca_path = sys.argv[1:]
out = subprocess.run([sys.executable, "-m", "pip", "config", "list"],
                     capture_output=True, text=True, check=True).stdout
keep = {"index-url", "extra-index-url", "find-links", "constraint", "trusted-host", "cert",
        "timeout", "default-timeout", "retries", "proxy", "no-index", "only-binary",
        "prefer-binary"}
settings = {}
for line in out.splitlines():  # section.key='value'; ":env:.key" (PIP_*) wins
    name, _, value = line.partition("=")
    section, _, key = name.rpartition(".")
    if key in keep and section in ("global", "install", ":env:"):
        if section == ":env:" or key not in settings:
            settings[key] = value.strip().strip("'\"")
for var in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_TRUSTED_HOST"):
    if os.environ.get(var):
        settings[var[4:].lower().replace("_", "-")] = os.environ[var]
ca = (settings.pop("cert", "") or os.environ.get("SSL_CERT_FILE", "")
      or "/etc/ssl/certs/ca-certificates.crt")
mounts = set()
if os.path.isfile(ca):
    shutil.copyfile(ca, ca_path)
    settings["cert"] = "/run/secrets/ca.crt"
for key in ("index-url", "extra-index-url", "find-links", "constraint"):
    for item in settings.get(key, "").split():
        path = urlsplit(item).path if item.startswith("file:") else item
        if "://" not in item or item.startswith("file:"):
            if os.path.exists(path):
                path = os.path.realpath(path)
                # a local "simple" index links to its files beside it (../../files/...)
                root = os.path.dirname(path) if key.endswith("index-url") else path
                mounts.add(root)
parser = configparser.ConfigParser()
parser["global"] = settings
with open(conf_path, "w") as fh:
    fh.write("# generated by deploy/image/build.sh from this host's pip configuration\n")
    parser.write(fh)
print("\n".join(sorted(mounts)))
EOF
while IFS= read -r path; do
  [ -n "$path" ] && volumes+=(-v "$path:$path:ro")
done < "$BUILD_DIR/pip-mounts"
log "pip for the build ($HOST_PY's configuration): $(grep -v '^#' "$PIP_CONF" | tr '\n' ' ')"
log "mounted read-only in RUN steps: $(tr '\n' ' ' < "$BUILD_DIR/pip-mounts")"
# The CA bundle reaches the build as a file next to pip.conf (a second secret).
secrets=(--secret "id=pip.conf,src=$PIP_CONF")
[ -s "$BUILD_DIR/ca.crt" ] && secrets+=(--secret "id=ca.crt,src=$BUILD_DIR/ca.crt")

log "building $IMAGE (Beam $BEAM_VERSION) from $REPO/Dockerfile"
started=$(date +%s)
# buildah 1.28 leaves the working containers of the COPY --from stages behind: remove
# those this build created, also when it fails.
before=$("${BUILDAH[@]}" containers -q --notruncate | sort)
cleanup() {
  comm -13 <(echo "$before") <("${BUILDAH[@]}" containers -q --notruncate | sort) \
    | xargs -r "${BUILDAH[@]}" rm >/dev/null
}
trap cleanup EXIT
previous=$("${BUILDAH[@]}" inspect --type image --format '{{.FromImageID}}' "$IMAGE" 2>/dev/null || true)
"${BUILDAH[@]}" bud --isolation chroot --pull-never \
  --build-arg "BASE_IMAGE=$BASE_IMAGE" \
  --build-arg "BEAM_SDK_IMAGE=$SDK_STANDIN" \
  --build-arg "LAUNCHER_IMAGE=$LAUNCHER_STANDIN" \
  --build-arg "BEAM_VERSION=$BEAM_VERSION" \
  "${secrets[@]}" "${volumes[@]}" \
  --label "org.opencontainers.image.description=beamscore, built offline with stand-ins for the Beam boot and the Flex Template launcher: not for Dataflow" \
  --label "org.opencontainers.image.title=beamscore $VERSION" \
  -t "$IMAGE" -f "$REPO/Dockerfile" "$REPO"
cleanup
current=$("${BUILDAH[@]}" inspect --type image --format '{{.FromImageID}}' "$IMAGE")
if [ -n "$previous" ] && [ "$previous" != "$current" ]; then  # the image this one replaces
  "${BUILDAH[@]}" rmi "$previous" >/dev/null 2>&1 || true
fi
log "built $IMAGE in $(( $(date +%s) - started )) s"
"${BUILDAH[@]}" images

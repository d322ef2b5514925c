#!/usr/bin/env bash
# Install a go2rtc binary for LightNVR (and a basic config for running it on its own).
#
# LightNVR's "auto" and "go2rtc" engines look for go2rtc in the path set in the options, then on
# PATH, then in /usr/local/bin — where this script installs it by default. LightNVR writes its
# own private go2rtc.yaml when it runs go2rtc itself; the config written here is for running
# go2rtc separately (LightNVR's "external" engine), with every listener on 127.0.0.1.
set -euo pipefail

REPO_URL="https://github.com/AlexxIT/go2rtc"
INSTALL_DIR="/usr/local/bin"
CONFIG_DIR="/etc/lightnvr/go2rtc"
VERSION="latest"
DRY_RUN=0
PROG="$(basename "$0")"

usage() {
  cat <<EOF
Usage: $PROG [options]

Download the go2rtc release binary for this machine's architecture and install it.

Options:
  --install-dir DIR   where to put the go2rtc binary (default: $INSTALL_DIR)
  --config-dir DIR    where to write a basic go2rtc.yaml (default: $CONFIG_DIR);
                      an existing go2rtc.yaml is kept
  --version VERSION   go2rtc release to install, e.g. 1.9.13 (default: latest)
  --dry-run           print what would be downloaded and written, change nothing
  -h, --help          show this help

Architectures (from uname -m): amd64, arm64, arm, armv6, 386, mipsel.
LightNVR needs go2rtc 1.9.0 or newer.
EOF
}

die() {
  echo "$PROG: $*" >&2
  exit 1
}

bad_usage() {
  echo "$PROG: $*" >&2
  usage >&2
  exit 2
}

while [ $# -gt 0 ]; do
  case "$1" in
    --install-dir)
      if [ $# -lt 2 ] || [ -z "$2" ]; then bad_usage "--install-dir needs a folder"; fi
      INSTALL_DIR="$2"
      shift 2
      ;;
    --install-dir=*) INSTALL_DIR="${1#*=}"; shift ;;
    --config-dir)
      if [ $# -lt 2 ] || [ -z "$2" ]; then bad_usage "--config-dir needs a folder"; fi
      CONFIG_DIR="$2"
      shift 2
      ;;
    --config-dir=*) CONFIG_DIR="${1#*=}"; shift ;;
    --version)
      if [ $# -lt 2 ] || [ -z "$2" ]; then bad_usage "--version needs a version"; fi
      VERSION="$2"
      shift 2
      ;;
    --version=*) VERSION="${1#*=}"; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) bad_usage "unknown option: $1" ;;
  esac
done

# go2rtc names its Linux release assets go2rtc_linux_<arch>. LIGHTNVR_UNAME_M replaces
# `uname -m` (tests use it to check every architecture on one machine).
machine="${LIGHTNVR_UNAME_M:-$(uname -m)}"
case "$machine" in
  x86_64 | amd64) ARCH="amd64" ;;
  aarch64 | arm64 | armv8*) ARCH="arm64" ;;
  armv7* | armhf | arm) ARCH="arm" ;;
  armv6*) ARCH="armv6" ;;
  i386 | i486 | i586 | i686 | x86) ARCH="386" ;;
  mips | mipsel | mipsle) ARCH="mipsel" ;;
  *) die "unsupported architecture '$machine' (supported: amd64, arm64, arm, armv6, 386, mipsel)" ;;
esac

ASSET="go2rtc_linux_${ARCH}"
if [ "$VERSION" = "latest" ]; then
  URL="$REPO_URL/releases/latest/download/$ASSET"
else
  VERSION="${VERSION#v}"
  [[ "$VERSION" =~ ^[0-9]+\.[0-9]+(\.[0-9]+)?$ ]] || bad_usage "--version must look like 1.9.13"
  URL="$REPO_URL/releases/download/v$VERSION/$ASSET"
fi
TARGET="$INSTALL_DIR/go2rtc"
CONFIG="$CONFIG_DIR/go2rtc.yaml"

basic_config() {
  cat <<'EOF'
# Basic go2rtc configuration written by LightNVR's install_go2rtc.sh.
# Every listener is on 127.0.0.1: only programs on this machine can reach go2rtc.
# Point LightNVR's "external" engine at http://127.0.0.1:1984 to use it.
api:
  listen: "127.0.0.1:1984"
rtsp:
  listen: "127.0.0.1:8554"
webrtc:
  listen: "127.0.0.1:8555"
  ice_servers: []
log:
  level: info
  format: text
streams: {}
EOF
}

if [ "$DRY_RUN" -eq 1 ]; then
  echo "Architecture: $machine -> $ARCH"
  echo "Would download: $URL"
  echo "Would install:  $TARGET"
  if [ -e "$CONFIG" ]; then
    echo "Would keep:     $CONFIG (exists)"
  else
    echo "Would write:    $CONFIG"
    basic_config | sed 's/^/    /'
  fi
  exit 0
fi

if command -v curl >/dev/null 2>&1; then
  fetch() { curl -fL --retry 3 --connect-timeout 20 -o "$2" "$1"; }
elif command -v wget >/dev/null 2>&1; then
  fetch() { wget -q -O "$2" "$1"; }
else
  die "neither curl nor wget is installed"
fi

mkdir -p "$INSTALL_DIR" || die "cannot create $INSTALL_DIR (run as root?)"
TMP="$(mktemp "$INSTALL_DIR/.go2rtc.XXXXXX")" || die "cannot write to $INSTALL_DIR (run as root?)"
trap 'rm -f "$TMP"' EXIT

echo "Downloading $URL"
fetch "$URL" "$TMP" || die "download failed: $URL"
chmod 0755 "$TMP"
if ! "$TMP" -v >/dev/null 2>&1; then
  die "the downloaded go2rtc does not run on this machine ($machine)"
fi
mv -f "$TMP" "$TARGET"
trap - EXIT
echo "Installed $("$TARGET" -v 2>&1 | head -n 1) to $TARGET"

mkdir -p "$CONFIG_DIR"
if [ -e "$CONFIG" ]; then
  echo "Kept the existing $CONFIG"
else
  basic_config >"$CONFIG"
  echo "Wrote $CONFIG"
fi

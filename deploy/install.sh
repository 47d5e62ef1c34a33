#!/usr/bin/env bash
# Install weed-detector as a systemd service on Raspberry Pi OS Bookworm (aarch64) or a
# Jetson (JetPack 6, Ubuntu 22.04). Idempotent: running it again upgrades the package,
# keeps an existing config, and leaves what is already in place alone.
#
#   sudo deploy/install.sh [--dry-run] [--platform pi|jetson|generic] [--model DIR]
#                          [--prefix DIR] [--no-start]
#
#   --dry-run    print every step (commands prefixed with "+"), change nothing
#   --platform   skip the detection (/proc/device-tree/model, /etc/nv_tegra_release)
#   --model DIR  also install this model bundle (a folder with manifest.json) under
#                /var/lib/weed-detector/models/<name>; select it with [model] bundle = "<name>"
#   --prefix DIR where the venv goes (default /opt/weed-detector)
#   --no-start   enable the service but do not (re)start it now
#
# The live view's extra (Flask) is always installed; it stays off until [web] listen is set.
#
# See docs/deploy.md for what it does, the wiring, and the hardware fail-safe.
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PREFIX=/opt/weed-detector
ETC=/etc/weed-detector
STATE=/var/lib/weed-detector
USER_NAME=weed-detector
UNIT=/etc/systemd/system/weed-detector.service
DRY=0
START=1
VALID=1
PLATFORM=""
MODEL=""

usage() { sed -n '2,/^set /{/^#/p}' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --no-start) START=0 ;;
    --platform) PLATFORM=${2:?--platform needs pi, jetson or generic}; shift ;;
    --model) MODEL=${2:?--model needs a bundle folder}; shift ;;
    --prefix) PREFIX=${2:?--prefix needs a folder}; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

VENV=$PREFIX/venv

# Print a step; run it unless --dry-run.
run() {
  printf '+ %s\n' "$*"
  if [ "$DRY" -eq 0 ]; then "$@"; fi
}
step() { printf '\n== %s\n' "$*"; }
skip() { printf '  (%s)\n' "$*"; }
die() { echo "install.sh: $*" >&2; exit 1; }

if [ "$DRY" -eq 0 ] && [ "$(id -u)" -ne 0 ]; then
  die "run as root (sudo deploy/install.sh), or try --dry-run first"
fi

detect_platform() {
  if [ -r /etc/nv_tegra_release ]; then
    echo jetson
  elif grep -qs "Raspberry Pi" /proc/device-tree/model; then
    echo pi
  else
    echo generic
  fi
}
[ -n "$PLATFORM" ] || PLATFORM=$(detect_platform)
case "$PLATFORM" in
  pi) EXTRAS="[pi,web]"; CONSTRAINTS=$SRC/deploy/constraints-bookworm.txt
      APT_PACKAGES="python3-venv python3-pip python3-numpy python3-picamera2 python3-lgpio python3-gpiozero" ;;
  jetson) EXTRAS="[jetson,web]"; CONSTRAINTS=$SRC/deploy/constraints-jetson.txt
          APT_PACKAGES="python3-venv python3-pip" ;;
  generic) EXTRAS="[web]"; CONSTRAINTS=$SRC/deploy/constraints-bookworm.txt
           APT_PACKAGES="python3-venv python3-pip" ;;
  *) die "--platform must be pi, jetson or generic, not '$PLATFORM'" ;;
esac
echo "weed-detector install: platform $PLATFORM, source $SRC, venv $VENV$([ "$DRY" -eq 1 ] && echo ', DRY RUN')"
[ -f "$SRC/pyproject.toml" ] || die "$SRC is not a weed-detector checkout (no pyproject.toml)"

step "system packages"
missing=""
for pkg in $APT_PACKAGES; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
  run apt-get update
  # shellcheck disable=SC2086  # one word per package
  run apt-get install -y --no-install-recommends $missing
else
  skip "already installed: $APT_PACKAGES"
fi

step "service user $USER_NAME (groups gpio, dialout, video)"
if id -u "$USER_NAME" >/dev/null 2>&1; then
  skip "user exists"
else
  run useradd --system --user-group --home-dir "$STATE" --shell /usr/sbin/nologin "$USER_NAME"
fi
for group in gpio dialout video; do
  if ! getent group "$group" >/dev/null; then
    run groupadd --system "$group"
  fi
  if id -nG "$USER_NAME" 2>/dev/null | tr ' ' '\n' | grep -qx "$group"; then
    skip "$USER_NAME already in $group"
  else
    run usermod -a -G "$group" "$USER_NAME"
  fi
done
if [ "$PLATFORM" = jetson ] && [ ! -f /etc/udev/rules.d/99-weed-detector-gpio.rules ]; then
  # Jetson: /dev/gpiochip* belong to root; let the gpio group use them (Jetson.GPIO's own rule).
  rule='SUBSYSTEM=="gpio", KERNEL=="gpiochip*", GROUP="gpio", MODE="0660"'
  printf '+ write %s\n' "/etc/udev/rules.d/99-weed-detector-gpio.rules: $rule"
  if [ "$DRY" -eq 0 ]; then echo "$rule" > /etc/udev/rules.d/99-weed-detector-gpio.rules; fi
  run udevadm control --reload-rules
  run udevadm trigger --subsystem-match=gpio
fi

step "virtual environment (system site packages: apt's picamera2, numpy, lgpio)"
if [ -x "$VENV/bin/python" ]; then
  skip "$VENV exists"
else
  run mkdir -p "$PREFIX"
  run python3 -m venv --system-site-packages "$VENV"
fi
run "$VENV/bin/python" -m pip install --upgrade --constraint "$CONSTRAINTS" "$SRC$EXTRAS"
run "$VENV/bin/edge-run" --version

step "config, models, docs"
run install -d -m 0750 -o root -g "$USER_NAME" "$ETC"
if [ -f "$ETC/config.toml" ]; then
  skip "$ETC/config.toml kept (compare with $SRC/deploy/config.example.toml after upgrades)"
else
  run install -m 0640 -o root -g "$USER_NAME" "$SRC/deploy/config.example.toml" "$ETC/config.toml"
fi
run install -d -m 0750 -o "$USER_NAME" -g "$USER_NAME" "$STATE" "$STATE/models"
if [ -n "$MODEL" ]; then
  [ -f "$MODEL/manifest.json" ] || die "--model $MODEL: no manifest.json there (a bundle folder is needed)"
  name=$(basename "$(cd "$MODEL" && pwd)")
  run rm -rf "$STATE/models/$name"
  run cp -r "$MODEL" "$STATE/models/$name"
  run chown -R "root:$USER_NAME" "$STATE/models/$name"
  echo "  select it in $ETC/config.toml: [model] bundle = \"$name\""
fi
run install -d "$PREFIX/docs"
run install -m 0644 "$SRC/docs/deploy.md" "$PREFIX/docs/deploy.md"

step "systemd unit"
unit_text=$(sed "s#/opt/weed-detector#$PREFIX#g" "$SRC/deploy/weed-detector.service")
if [ -f "$UNIT" ] && [ "$(cat "$UNIT")" = "$unit_text" ]; then
  skip "$UNIT up to date"
else
  printf '+ write %s (deploy/weed-detector.service, venv in %s)\n' "$UNIT" "$PREFIX"
  if [ "$DRY" -eq 0 ]; then
    printf '%s\n' "$unit_text" > "$UNIT"
    chmod 0644 "$UNIT"
  fi
  run systemctl daemon-reload
fi

step "check the config as the service will (edge-run --validate-config)"
# The check opens what the service holds while it runs (outputs, GPIO pins, the GPS port, the live view's
# port): a running service is stopped first (all off; the restart below starts it again), or, with
# --no-start, the check is left to its next start (the unit's ExecStartPre runs it).
RUNNING=0
if [ "$DRY" -eq 0 ]; then
  case "$(systemctl is-active weed-detector.service 2>/dev/null)" in
    active|activating|reloading|deactivating) RUNNING=1 ;;  # starting or restarting holds them too
  esac
fi
STOPPED=0
if [ "$RUNNING" -eq 1 ] && [ "$START" -eq 1 ]; then
  run systemctl stop weed-detector.service || die "could not stop the running service for the check"
  STOPPED=1
fi
if [ "$DRY" -eq 1 ]; then
  run runuser -u "$USER_NAME" -- "$VENV/bin/edge-run" --config "$ETC/config.toml" --validate-config
elif [ "$RUNNING" -eq 1 ] && [ "$STOPPED" -eq 0 ]; then
  skip "the service is running (--no-start: not stopped); its next start checks the config first (ExecStartPre)"
elif ! (cd "$STATE" && runuser -u "$USER_NAME" -- env WEED_DETECTOR_MODELS="$STATE/models" \
        "$VENV/bin/edge-run" --config "$ETC/config.toml" --validate-config); then
  [ "$STOPPED" -eq 1 ] && echo "install.sh: the service was stopped for the check and stays stopped (all outputs off)" >&2
  echo "install.sh: the config does not validate yet: edit $ETC/config.toml, then" >&2
  echo "  sudo systemctl restart weed-detector" >&2
  START=0
  VALID=0
fi

step "check the backstop the unit runs after every stop (ExecStopPost: edge-run --all-off)"
if [ "$DRY" -eq 1 ]; then
  run runuser -u "$USER_NAME" -- "$VENV/bin/edge-run" --config "$ETC/config.toml" --all-off
elif [ "$VALID" -eq 0 ]; then
  skip "config not valid yet"
elif [ "$RUNNING" -eq 1 ] && [ "$STOPPED" -eq 0 ]; then
  skip "the service is running and holds the outputs; its ExecStopPost runs it when it stops"
elif ! (cd "$STATE" && runuser -u "$USER_NAME" -- "$VENV/bin/edge-run" --config "$ETC/config.toml" --all-off); then
  [ "$STOPPED" -eq 1 ] && echo "install.sh: the service was stopped for the checks and stays stopped" >&2
  echo "install.sh: edge-run --all-off failed as $USER_NAME: after a crash the service could not switch" >&2
  echo "  the valves off; fix [outputs] in $ETC/config.toml (or the groups/permissions), then" >&2
  echo "  sudo systemctl restart weed-detector" >&2
  START=0
fi

step "enable the service"
run systemctl enable weed-detector.service
if [ "$START" -eq 1 ]; then
  run systemctl restart weed-detector.service
  echo "follow it with: journalctl -u weed-detector -f   (status: systemctl status weed-detector)"
else
  if [ "$RUNNING" -eq 1 ] && [ "$STOPPED" -eq 0 ]; then
    skip "--no-start: the running service still runs the old version: sudo systemctl restart weed-detector"
  else
    skip "not started (--no-start or config not valid yet): sudo systemctl start weed-detector"
  fi
fi

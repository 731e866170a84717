#!/usr/bin/env bash
# Ketter offline installer (docs/operations.md, "Install").
#
#   sudo deploy/install.sh --wheelhouse DIR     install or upgrade
#   sudo deploy/install.sh --uninstall          remove the venv and the units
#   DESTDIR=/tmp/stage deploy/install.sh        lay out files and units only
#
# Run it from a Ketter checkout or release tarball (it reads
# configs/ketter.example.yaml and docs/ next to this folder). It downloads
# nothing: the venv is filled with `pip --no-index` from the wheelhouse that
# `make wheelhouse` built (same Python minor version and CPU architecture as
# this machine). Idempotent: run it again to upgrade; an existing
# /etc/ketter/ketter.yaml is never overwritten; the job store, the audit log
# and the ketter user are never removed, not even by --uninstall.
#
# Environment: DESTDIR (staging root), PREFIX (/opt/ketter), PYTHON
# (/usr/bin/python3: the system interpreter, outside any home folder, which
# the units' ProtectHome= would hide), KETTER_USER (ketter), UNIT_DIR
# (/etc/systemd/system), KETTER_PYTHON (a Python with Ketter importable, to
# render the units when the venv is not built, i.e. with DESTDIR).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
DESTDIR="${DESTDIR:-}"
PREFIX="${PREFIX:-/opt/ketter}"
PYTHON="${PYTHON:-/usr/bin/python3}"
KETTER_USER="${KETTER_USER:-ketter}"
UNIT_DIR="${UNIT_DIR:-/etc/systemd/system}"
CONFIG_DIR=/etc/ketter
CONFIG="$CONFIG_DIR/ketter.yaml"
EXAMPLE="$REPO/configs/ketter.example.yaml"
UNITS=(ketter-workers.service ketter-watcher.service ketter.target)
# Rendered only when the config sets api.listen (docs/operations.md, The API).
API_UNIT=ketter-api.service
WHEELHOUSE=""
UNINSTALL=0
SKIPPED=()

usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; }
say() { printf '%s\n' "$*"; }
die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --wheelhouse) [ $# -ge 2 ] || die "--wheelhouse needs a folder"; WHEELHOUSE="$2"; shift 2 ;;
    --wheelhouse=*) WHEELHOUSE="${1#*=}"; shift ;;
    --uninstall) UNINSTALL=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done

if [ -z "$DESTDIR" ] && [ "$(id -u)" -ne 0 ]; then
  die "run as root (or set DESTDIR to stage the files without installing)"
fi
[ -z "$DESTDIR" ] || DESTDIR="$(mkdir -p "$DESTDIR" && cd "$DESTDIR" && pwd)"

have_systemd() { command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; }

systemctl_or_skip() {  # systemctl ARGS... unless staging or not booted with systemd
  if [ -n "$DESTDIR" ]; then SKIPPED+=("systemctl $*"); return 0; fi
  if ! have_systemd; then SKIPPED+=("systemctl $* (systemd is not running here)"); return 0; fi
  systemctl "$@"
}

# ------------------------------------------------------------------ uninstall
if [ "$UNINSTALL" -eq 1 ]; then
  systemctl_or_skip disable --now "${UNITS[@]}" || true
  # On its own: one unit file missing would make systemctl skip them all.
  if [ -e "$DESTDIR$UNIT_DIR/$API_UNIT" ]; then
    systemctl_or_skip disable --now "$API_UNIT" || true
  fi
  for unit in "${UNITS[@]}" "$API_UNIT"; do
    rm -f "$DESTDIR$UNIT_DIR/$unit"
  done
  systemctl_or_skip daemon-reload
  rm -rf "$DESTDIR$PREFIX"
  say "Removed the units from $UNIT_DIR and the venv $PREFIX."
  say "Kept (records and settings): $CONFIG_DIR/, the state directory (job store, audit"
  say "log) and the user $KETTER_USER. Archive the audit log before deleting them by hand."
  for item in "${SKIPPED[@]}"; do say "skipped: $item"; done
  exit 0
fi

# ----------------------------------------------------------------- user
if [ -n "$DESTDIR" ]; then
  SKIPPED+=("creating the system user and group $KETTER_USER")
else
  getent group "$KETTER_USER" >/dev/null || groupadd --system "$KETTER_USER"
  if ! id -u "$KETTER_USER" >/dev/null 2>&1; then
    useradd --system --gid "$KETTER_USER" --home-dir /var/lib/ketter --no-create-home \
      --shell /usr/sbin/nologin --comment "Ketter transfer node" "$KETTER_USER"
    say "created system user $KETTER_USER"
  fi
fi

# ----------------------------------------------------------------- venv
if [ -n "$DESTDIR" ]; then
  SKIPPED+=("the venv $PREFIX (pip install --no-index from the wheelhouse)")
else
  [ -n "$WHEELHOUSE" ] || { [ -d "$REPO/dist/wheelhouse" ] && WHEELHOUSE="$REPO/dist/wheelhouse"; } \
    || die "no wheelhouse: build one with \`make wheelhouse\` and pass --wheelhouse DIR"
  ls "$WHEELHOUSE"/ketter-*.whl >/dev/null 2>&1 || die "$WHEELHOUSE holds no ketter wheel"
  constraints=()
  [ -f "$WHEELHOUSE/constraints.txt" ] && constraints=(-c "$WHEELHOUSE/constraints.txt")
  [ -x "$PREFIX/bin/python" ] || "$PYTHON" -m venv "$PREFIX"
  "$PREFIX/bin/python" -m pip install --quiet --disable-pip-version-check --no-index \
    --find-links "$WHEELHOUSE" "${constraints[@]}" ketter
  # The same version number may carry new code (a rebuilt wheel): reinstall it.
  "$PREFIX/bin/python" -m pip install --quiet --disable-pip-version-check --no-index \
    --find-links "$WHEELHOUSE" --force-reinstall --no-deps ketter
  say "venv $PREFIX: $("$PREFIX/bin/ketter" --version)"
fi

# ----------------------------------------------------------------- config
install -d -m 0750 "$DESTDIR$CONFIG_DIR"
if [ -e "$DESTDIR$CONFIG" ]; then
  say "kept the existing $CONFIG"
else
  install -m 0640 "$EXAMPLE" "$DESTDIR$CONFIG"
  say "wrote $CONFIG from the example: edit the routes before starting"
fi
if [ -n "$DESTDIR" ]; then
  SKIPPED+=("ownership root:$KETTER_USER of $CONFIG_DIR and $KETTER_USER of the state directory")
else
  chown root:"$KETTER_USER" "$CONFIG_DIR" "$CONFIG"
fi

# ----------------------------------------------------------------- python to render with
if [ -z "$DESTDIR" ]; then
  RENDER_PY="$PREFIX/bin/python"
elif [ -n "${KETTER_PYTHON:-}" ]; then
  RENDER_PY="$KETTER_PYTHON"
elif [ -x "$PREFIX/bin/python" ]; then
  RENDER_PY="$PREFIX/bin/python"
elif [ -x "$REPO/.venv/bin/python" ]; then
  RENDER_PY="$REPO/.venv/bin/python"
else
  die "DESTDIR: no Python with Ketter to render the units; set KETTER_PYTHON"
fi

# ----------------------------------------------------------------- state directory
STATE_DIR="$("$RENDER_PY" -I -c 'import sys
from ketter.config import load_config
print(load_config(sys.argv[1]).state_dir)' "$DESTDIR$CONFIG")" \
  || die "$CONFIG is invalid: fix it (ketter config check), then run install.sh again"
install -d -m 0750 "$DESTDIR$STATE_DIR"
[ -n "$DESTDIR" ] || chown "$KETTER_USER:$KETTER_USER" "$STATE_DIR"

# ----------------------------------------------------------------- docs and units
install -d -m 0755 "$DESTDIR$PREFIX/share/doc/ketter"
install -m 0644 "$REPO/docs/operations.md" "$DESTDIR$PREFIX/share/doc/ketter/operations.md"
RENDERED="$("$RENDER_PY" -I -m ketter --config "$DESTDIR$CONFIG" deploy units \
  --config-path "$CONFIG" --python "$PREFIX/bin/python" --user "$KETTER_USER" \
  --out "$DESTDIR$UNIT_DIR" | grep '^wrote')" || die "rendering the units failed"
say "$RENDERED"
if ! grep -q "$API_UNIT" <<< "$RENDERED" && [ -e "$DESTDIR$UNIT_DIR/$API_UNIT" ]; then
  # api.listen was removed from the config: the API unit goes too.
  systemctl_or_skip disable --now "$API_UNIT" || true
  rm -f "$DESTDIR$UNIT_DIR/$API_UNIT"
  say "removed $UNIT_DIR/$API_UNIT (the config has no api.listen any more)"
fi
systemctl_or_skip daemon-reload

for item in "${SKIPPED[@]}"; do say "skipped: $item"; done
cat <<EOF

Next steps:
  1. Edit $CONFIG (routes, mounts, alerts), then check it:
       sudo -u $KETTER_USER $PREFIX/bin/ketter --config $CONFIG config check
  2. After every change of routes, render the units again (this script does it):
       sudo $0${WHEELHOUSE:+ --wheelhouse $WHEELHOUSE}
  3. Start now and at boot:   sudo systemctl enable --now ketter.target
  4. Check:                   $PREFIX/bin/ketter --config $CONFIG health
  5. Operators who read the job store and the audit log: sudo usermod -aG $KETTER_USER NAME
See $PREFIX/share/doc/ketter/operations.md.
EOF

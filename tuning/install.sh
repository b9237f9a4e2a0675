#!/usr/bin/env bash
# Installs sipfork as a systemd service on this host, from a built tree:
#   cargo build --release && sudo tuning/install.sh
# - the binary:       $PREFIX/bin/sipfork             (PREFIX=/usr/local by default)
# - the system user:  sipfork (no login, no home)      (useradd --system)
# - the config:       /etc/sipfork/sipfork.toml        (the example, with data_dir set to
#                                                       /var/lib/sipfork; an existing file is kept)
# - the journals:     /var/lib/sipfork, owned by sipfork, mode 0750
# - the unit:         /etc/systemd/system/sipfork.service (tuning/sipfork.service, ExecStart
#                     pointing at $PREFIX/bin/sipfork), with CAP_NET_BIND_SERVICE
# - the sysctls:      /etc/sysctl.d/99-sipfork.conf    (applied with sysctl --system)
# It enables nothing and starts nothing; it prints the commands that do. It never stops or
# disables another service.
# DESTDIR=/some/dir stages everything under that directory instead (no user, no sysctl apply,
# no systemctl): what the packaging test uses.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=${PREFIX:-/usr/local}
DESTDIR=${DESTDIR:-}
BIN=${BIN:-$ROOT/target/release/sipfork}
[[ -x $BIN ]] || { echo "install.sh: $BIN not found: run cargo build --release first" >&2; exit 2; }
if [[ -z $DESTDIR && $(id -u) != 0 ]]; then
  echo "install.sh: run as root (sudo tuning/install.sh), or set DESTDIR to stage" >&2
  exit 2
fi

install -D -m 755 "$BIN" "$DESTDIR$PREFIX/bin/sipfork"

if [[ -z $DESTDIR ]]; then
  if ! getent passwd sipfork >/dev/null; then
    echo "install.sh: creating the system user sipfork" >&2
    useradd --system --user-group --no-create-home --home-dir /var/lib/sipfork \
      --shell /usr/sbin/nologin sipfork
  fi
fi

install -d -m 755 "$DESTDIR/etc/sipfork"
CONFIG=$DESTDIR/etc/sipfork/sipfork.toml
if [[ -e $CONFIG ]]; then
  echo "install.sh: keeping the existing $CONFIG" >&2
else
  sed 's#^data_dir = "/tmp/sipfork-example"#data_dir = "/var/lib/sipfork"     #' \
    "$ROOT/examples/sipfork.toml" > "$CONFIG"
  grep -q '^data_dir = "/var/lib/sipfork"' "$CONFIG" \
    || { echo "install.sh: could not set data_dir in $CONFIG" >&2; exit 1; }
  chmod 640 "$CONFIG"
  [[ -n $DESTDIR ]] || chgrp sipfork "$CONFIG"   # passwords: readable by the service, not by all
fi

install -d -m 750 "$DESTDIR/var/lib/sipfork"
[[ -n $DESTDIR ]] || chown sipfork:sipfork /var/lib/sipfork

install -d -m 755 "$DESTDIR/etc/systemd/system"
sed "s#^ExecStart=/usr/bin/sipfork #ExecStart=$PREFIX/bin/sipfork #" \
  "$ROOT/tuning/sipfork.service" > "$DESTDIR/etc/systemd/system/sipfork.service"
chmod 644 "$DESTDIR/etc/systemd/system/sipfork.service"

install -D -m 644 "$ROOT/tuning/99-sipfork.conf" "$DESTDIR/etc/sysctl.d/99-sipfork.conf"

if [[ -z $DESTDIR ]]; then
  sysctl -q -p /etc/sysctl.d/99-sipfork.conf || echo "install.sh: sysctl could not apply 99-sipfork.conf (a container?); continuing" >&2
  if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
    systemctl daemon-reload
  fi
fi
cat >&2 <<MSG
install.sh: installed $PREFIX/bin/sipfork, /etc/sipfork/sipfork.toml, /var/lib/sipfork,
/etc/systemd/system/sipfork.service and /etc/sysctl.d/99-sipfork.conf${DESTDIR:+ under $DESTDIR}.
Edit /etc/sipfork/sipfork.toml (listen address, extensions, passwords), check it with
  $PREFIX/bin/sipfork check-config /etc/sipfork/sipfork.toml
then start it:
  systemctl enable --now sipfork
MSG

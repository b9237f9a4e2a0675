#!/usr/bin/env bash
# Builds the Debian package (cargo deb) and checks that it carries the unit and the config:
#   tuning/deb.sh [--no-build]        -> target/debian/sipfork_VERSION_ARCH.deb
# Needs cargo-deb (`cargo install cargo-deb`, a few minutes of compiling). The package holds
# /usr/bin/sipfork, /etc/sipfork/sipfork.toml (the example, data_dir = /var/lib/sipfork, staged
# by tuning/install.sh so both installs ship the same file), the sysctl file in
# /etc/sysctl.d/, and the unit in /lib/systemd/system/ (installed, not enabled or started); its
# postinst creates the user sipfork and /var/lib/sipfork. --no-build packages the binary already
# in target/release. OUT=DIR writes the .deb there.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
command -v cargo-deb >/dev/null || { echo "deb.sh: cargo-deb is not installed (cargo install cargo-deb)" >&2; exit 3; }
build=1
[[ ${1:-} == --no-build ]] && build=0
((build)) && cargo build --release --bin sipfork
STAGE=$ROOT/target/deb-stage
rm -rf "$STAGE"
DESTDIR=$STAGE PREFIX=/usr tuning/install.sh 2>/dev/null
args=(--no-build)
[[ -n ${OUT:-} ]] && args+=(--output "$OUT")
deb=$(cargo deb "${args[@]}" | tail -1)
listing=$(dpkg-deb -c "$deb")
for want in ./usr/bin/sipfork ./etc/sipfork/sipfork.toml ./etc/sysctl.d/99-sipfork.conf \
            systemd/system/sipfork.service ./usr/share/doc/sipfork/copyright; do
  grep -q -- "$want\$" <<<"$listing" || { echo "deb.sh: $deb lacks $want:" >&2; echo "$listing" >&2; exit 1; }
done
# The maintainer scripts (ours with cargo deb's systemd parts spliced in) must be valid sh.
control=$(mktemp -d)
trap 'rm -rf "$control"' EXIT
dpkg-deb -e "$deb" "$control"
for script in "$control"/postinst "$control"/prerm "$control"/postrm; do
  [[ ! -e $script ]] || sh -n "$script" || { echo "deb.sh: $(basename "$script") is not valid sh" >&2; exit 1; }
done
echo "$listing" >&2
echo "$deb"

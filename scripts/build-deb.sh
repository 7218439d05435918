#!/usr/bin/env bash
# Builds the Debian package of pinhole: target/debian/pinhole_VERSION-1_ARCH.deb, holding the
# binary, the systemd units (pinhole.service, pinhole-monitor@.service), the shipped rules as the
# conffile /etc/pinhole/rules.toml (rules/edge-router.toml), /etc/default/pinhole, a logrotate
# snippet, man pages and shell completions generated from the CLI definitions, the licence and
# the README. The README's "Install" section lists every file; tests/e2e/package.sh checks it.
#
# Usage: scripts/build-deb.sh          cargo build --release, then package target/release/pinhole
# Environment: PINHOLE_BIN=path        package this binary instead (no cargo)
#              SOURCE_DATE_EPOCH=N     file times and changelog date (default: the last commit's)
#
# Built with Debian's own dpkg-deb rather than cargo-deb: nothing to compile or install first
# (dpkg-deb comes with every Debian; dpkg-shlibdeps, for the library dependencies, with
# dpkg-dev), and every file, mode and maintainer script is written out here, in one place.
# Prints the path of the package.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO_DIR=$PWD

# dpkg-shlibdeps and strip (dpkg-dev and its binutils).
scripts/install-deps.sh package

if [ -z "${PINHOLE_BIN:-}" ]; then
    if ! command -v cargo >/dev/null 2>&1 && [ -f "${HOME:-}/.cargo/env" ]; then
        # shellcheck disable=SC1091
        . "${HOME:-}/.cargo/env"
    fi
    cargo build --release --locked --quiet --bin pinhole
    PINHOLE_BIN=$REPO_DIR/target/release/pinhole
fi

VERSION=$("$PINHOLE_BIN" --version | awk '{ print $2 }')
REVISION=1
ARCH=$(dpkg --print-architecture)
: "${SOURCE_DATE_EPOCH:=$(git log -1 --format=%ct 2>/dev/null || date +%s)}"
export SOURCE_DATE_EPOCH
OUT=$REPO_DIR/target/debian
STAGE=$OUT/stage
DEB=$OUT/pinhole_${VERSION}-${REVISION}_${ARCH}.deb
umask 022
rm -rf "$STAGE"
mkdir -p "$STAGE/DEBIAN"

put() {   # put MODE SOURCE DEST: install SOURCE at DEST inside the package
    install -D -m "$1" "$2" "$STAGE$3"
}

# The binary, stripped as Debian ships binaries.
put 0755 "$PINHOLE_BIN" /usr/bin/pinhole
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$STAGE/usr/bin/pinhole"

# systemd units, configuration (conffiles), logrotate.
put 0644 packaging/systemd/pinhole.service /usr/lib/systemd/system/pinhole.service
put 0644 packaging/systemd/pinhole-monitor@.service /usr/lib/systemd/system/pinhole-monitor@.service
put 0644 rules/edge-router.toml /etc/pinhole/rules.toml
put 0644 packaging/default /etc/default/pinhole
put 0644 packaging/logrotate /etc/logrotate.d/pinhole
put 0644 packaging/modules-load.conf /usr/lib/modules-load.d/pinhole.conf

# Man pages and completions, from the CLI definitions.
GEN=$OUT/generated
rm -rf "$GEN"
mkdir -p "$GEN/man"
"$PINHOLE_BIN" man-pages "$GEN/man" >/dev/null
for page in "$GEN"/man/*.1; do
    gzip -9n "$page"
    put 0644 "$page.gz" "/usr/share/man/man1/$(basename "$page").gz"
done
"$PINHOLE_BIN" completions bash > "$GEN/pinhole.bash"
"$PINHOLE_BIN" completions zsh > "$GEN/_pinhole"
"$PINHOLE_BIN" completions fish > "$GEN/pinhole.fish"
put 0644 "$GEN/pinhole.bash" /usr/share/bash-completion/completions/pinhole
put 0644 "$GEN/_pinhole" /usr/share/zsh/vendor-completions/_pinhole
put 0644 "$GEN/pinhole.fish" /usr/share/fish/vendor_completions.d/pinhole.fish

# Documentation: the licence (Debian's copyright file), the README, the changelog, examples.
DOC=/usr/share/doc/pinhole
put 0644 packaging/debian/copyright $DOC/copyright
gzip -9nc README.md > "$GEN/README.md.gz"
put 0644 "$GEN/README.md.gz" $DOC/README.md.gz
{
    printf 'pinhole (%s-%s) unstable; urgency=medium\n\n' "$VERSION" "$REVISION"
    printf '  * Built from the pinhole repository (commit %s) by scripts/build-deb.sh.\n\n' \
        "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    printf ' -- The pinhole developers <pinhole@packages.invalid>  %s\n' \
        "$(date -u -R -d "@$SOURCE_DATE_EPOCH")"
} > "$GEN/changelog.Debian"
gzip -9nf "$GEN/changelog.Debian"
put 0644 "$GEN/changelog.Debian.gz" $DOC/changelog.Debian.gz
put 0644 rules/edge-router.toml $DOC/examples/edge-router.toml
put 0644 rules/default.toml $DOC/examples/default.toml
for f in conntrackd.conf keepalived.conf pinhole-ha-notify.sh; do
    put 0644 "examples/ha/$f" "$DOC/examples/ha/$f"
done
put 0644 packaging/debian/lintian-overrides /usr/share/lintian/overrides/pinhole

# Maintainer scripts and conffiles.
for script in postinst prerm postrm; do
    install -m 0755 "packaging/debian/$script" "$STAGE/DEBIAN/$script"
done
printf '%s\n' /etc/default/pinhole /etc/logrotate.d/pinhole /etc/pinhole/rules.toml \
    > "$STAGE/DEBIAN/conffiles"

# Library dependencies of the binary (dpkg-shlibdeps wants a debian/control to read).
SHLIBS=$OUT/shlibs
rm -rf "$SHLIBS"
mkdir -p "$SHLIBS/debian"
printf 'Source: pinhole\n\nPackage: pinhole\nArchitecture: any\n' > "$SHLIBS/debian/control"
LIBS=$(cd "$SHLIBS" && dpkg-shlibdeps -O -e "$STAGE/usr/bin/pinhole" 2>/dev/null |
    sed -n 's/^shlibs:Depends=//p')
[ -n "$LIBS" ] || { echo "build-deb.sh: dpkg-shlibdeps found no libraries" >&2; exit 1; }

SIZE=$(du -sk --exclude=DEBIAN "$STAGE" | cut -f1)
cat > "$STAGE/DEBIAN/control" <<EOF
Package: pinhole
Version: $VERSION-$REVISION
Architecture: $ARCH
Maintainer: The pinhole developers <pinhole@packages.invalid>
Installed-Size: $SIZE
Depends: $LIBS, iptables, procps, init-system-helpers (>= 1.54~)
Recommends: logrotate
Section: net
Priority: optional
Description: stateful FTP/TFTP inspection firewall (ALG) for Linux routers
 pinhole reads the FTP control connections (PORT, EPRT, PASV, EPSV) and TFTP
 requests a router forwards, from NFQUEUE, and opens a short-lived,
 single-use pinhole for exactly the data connection or transfer they
 negotiate; everything else no rule allows is dropped. It replaces "permit
 established" and open passive port ranges, as Cisco ip inspect does.
 .
 It also replays captures through the same engine and watches an interface
 passively, reporting what it would drop. The package holds the systemd units
 pinhole.service (inline) and pinhole-monitor@.service (passive), neither
 enabled at install.
EOF

(cd "$STAGE" && find . -type f ! -path './DEBIAN/*' -printf '%P\n' | LC_ALL=C sort |
    xargs -d '\n' md5sum) > "$STAGE/DEBIAN/md5sums"
find "$STAGE" -type d -exec chmod 0755 {} +
find "$STAGE" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
rm -f "$DEB"
dpkg-deb --root-owner-group -Zxz --build "$STAGE" "$DEB" >/dev/null
echo "$DEB"

#!/usr/bin/env bash
# Checks the built .deb as CI must: first what it holds (issue 12, item 1:
# binary without the simulator and stripped, unit, sysusers file, the config
# as a 0640 conffile, logrotate, docs and the example, maintainer scripts that
# never enable or start the service), then, with --install (root, a machine
# without mde-poller installed), its life: dpkg -i, the user, the config's
# owner and mode, the installed binary, `check --config-only`, `systemd-analyze
# verify`, a reinstall keeping an edited config, remove (keeps state and
# config) and purge (deletes both). Prints one line per check; exits 1 at the
# first failure.
set -euo pipefail
cd "$(dirname "$0")/../.."

usage() { echo "usage: $0 [--install] PATH/mde-poller_VERSION_ARCH.deb" >&2; exit 2; }
install=false
if [ "${1:-}" = "--install" ]; then install=true; shift; fi
[ $# -eq 1 ] || usage
deb=$1
[ -f "$deb" ] || { echo "check-package: $deb not found: build it with 'cargo deb --strip'" >&2; exit 1; }

checks=0
ok() { checks=$((checks + 1)); echo "ok    $*"; }
fail() { echo "FAIL  $*" >&2; exit 1; }
# expect "what" command...: the command must succeed.
expect() { local what=$1; shift; if "$@"; then ok "$what"; else fail "$what"; fi; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# --- what the package holds -------------------------------------------------
dpkg-deb --contents "$deb" > "$work/contents"
# "mode path" per entry, the leading "./" dropped.
awk '{ p = $6; sub(/^\.\//, "/", p); print $1, p }' "$work/contents" > "$work/entries"
mode_of() { awk -v p="$1" '$2 == p { print $1 }' "$work/entries"; }
holds() { # path mode
  local got
  got=$(mode_of "$1")
  [ -n "$got" ] || fail "the package holds $1"
  [ "$got" = "$2" ] || fail "$1 is $got, expected $2"
  ok "the package holds $1 ($2)"
}
holds /usr/bin/mde-poller -rwxr-xr-x
unit=$(awk '$2 ~ /^\/(usr\/)?lib\/systemd\/system\/mde-poller\.service$/ { print $2 }' "$work/entries")
[ -n "$unit" ] || fail "the package holds the unit in the systemd unit directory"
holds "$unit" -rw-r--r--
holds /usr/lib/sysusers.d/mde-poller.conf -rw-r--r--
holds /etc/mde-poller/config.toml -rw-r-----
holds /etc/logrotate.d/mde-poller -rw-r--r--
for doc in README.md DEPLOY.md SCALE.md FORMATS.md copyright changelog.Debian.gz examples/config.toml; do
  holds "/usr/share/doc/mde-poller/$doc" -rw-r--r--
done
for path in /var/lib/mde-poller /var/log/mde-poller; do
  if [ -n "$(mode_of "$path/")$(mode_of "$path")" ]; then fail "the package leaves $path to systemd"; fi
done
ok "the package leaves /var/lib/mde-poller and /var/log/mde-poller to systemd"

dpkg-deb --ctrl-tarfile "$deb" | tar -x -C "$work"
expect "conffiles: /etc/mde-poller/config.toml" grep -qx /etc/mde-poller/config.toml "$work/conffiles"
expect "conffiles: /etc/logrotate.d/mde-poller" grep -qx /etc/logrotate.d/mde-poller "$work/conffiles"
expect "postinst runs systemd-sysusers" grep -q 'systemd-sysusers.*mde-poller.conf' "$work/postinst"
expect "postinst try-restarts on upgrade (restarts only a running service)" grep -q 'deb-systemd-invoke try-restart mde-poller.service' "$work/postinst"
if grep -v '^[[:space:]]*#' "$work/postinst" | grep -Eq 'deb-systemd-invoke (start|restart)|systemctl (start|restart|enable)'; then
  fail "postinst neither enables nor starts the service"
fi
# The one `deb-systemd-helper enable` allowed is inside `if … was-enabled`:
# it restores an administrator's enablement, never creates one.
enables=$(grep -c 'deb-systemd-helper enable' "$work/postinst" || true)
guarded=$(grep -B3 'deb-systemd-helper enable' "$work/postinst" | grep -c 'was-enabled' || true)
[ "$enables" = "$guarded" ] || fail "postinst enables the service only if it was enabled before"
ok "postinst neither enables nor starts the service"
expect "postrm purge deletes the state" grep -q 'rm -rf /var/lib/mde-poller' "$work/postrm"

dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$work" ./usr/bin/mde-poller ./etc/mde-poller/config.toml
expect "the packaged config is config/example.toml" cmp -s "$work/etc/mde-poller/config.toml" config/example.toml
# .debug_gdb_scripts is loaded with the program and survives strip.
if readelf -SW "$work/usr/bin/mde-poller" | grep -Eq '\.symtab|\.debug_(info|line|abbrev|str) '; then
  fail "the binary is stripped (no .symtab, .debug_info or .debug_line section)"
fi
ok "the binary is stripped"
help=$("$work/usr/bin/mde-poller" --help)
if grep -q demo <<<"$help"; then fail "the packaged binary has no demo command (built without the sim feature)"; fi
ok "the packaged binary has no demo command (built without the sim feature)"

$install || { echo "check-package: $checks checks passed (contents only; --install also installs it)"; exit 0; }

# --- its life on this machine -------------------------------------------------
[ "$(id -u)" = 0 ] || fail "--install runs as root"
if dpkg-query -W -f '${Status}' mde-poller 2>/dev/null | grep -q installed; then
  fail "mde-poller is already installed here; --install is for a CI machine"
fi
dpkg -i "$deb" > "$work/dpkg-i.log" 2>&1 || { cat "$work/dpkg-i.log" >&2; fail "dpkg -i $deb"; }
ok "dpkg -i installs it"
expect "the system user mde-poller exists" id -u mde-poller > /dev/null
expect "the config is root:mde-poller 0640" test "$(stat -c '%U:%G %a' /etc/mde-poller/config.toml)" = "root:mde-poller 640"
expect "/etc/mde-poller is root:mde-poller 0750" test "$(stat -c '%U:%G %a' /etc/mde-poller)" = "root:mde-poller 750"
version=$(/usr/bin/mde-poller --version)
expect "mde-poller --version prints the package's version ($version)" \
  test "$version" = "mde-poller $(dpkg-query -W -f '${Version}' mde-poller | sed 's/-[^-]*$//')"
# The shipped config takes its secrets from systemd credentials (the unit's
# LoadCredential=); outside the unit, a folder of dummy secrets stands in for
# $CREDENTIALS_DIRECTORY, readable by the service user.
creds=$(mktemp -d)
trap 'rm -rf "$work" "$creds"' EXIT
printf 'dummy\n' > "$creds/client-secret"
printf 'dummy\n' > "$creds/fabrikam-client-secret"
chown -R mde-poller: "$creds" && chmod 0700 "$creds" && chmod 0600 "$creds"/*
expect "check --config-only passes on the installed config (as root)" \
  env CREDENTIALS_DIRECTORY="$creds" /usr/bin/mde-poller --config /etc/mde-poller/config.toml check --config-only
expect "check --config-only passes as the service user (the group reads the config)" \
  runuser -u mde-poller -- env CREDENTIALS_DIRECTORY="$creds" /usr/bin/mde-poller --config /etc/mde-poller/config.toml check --config-only
if runuser -u nobody -- cat /etc/mde-poller/config.toml > /dev/null 2>&1; then
  fail "other users cannot read the config"
fi
ok "other users cannot read the config"
for link in /etc/systemd/system/*.wants/mde-poller.service; do
  [ ! -e "$link" ] || fail "the service is not enabled at install ($link exists)"
done
ok "the service is not enabled at install"
verify=$(systemd-analyze verify "$unit" 2>&1 || true)
[ -z "$verify" ] || { echo "$verify" >&2; fail "systemd-analyze verify $unit"; }
ok "systemd-analyze verify on the installed unit prints nothing"

# An edited config survives a reinstall (the upgrade path: postinst gets the
# old version as $2) without a prompt, and keeps its owner and mode.
echo "# edited by check-package" >> /etc/mde-poller/config.toml
dpkg -i --force-confold "$deb" > "$work/dpkg-i2.log" 2>&1 || { cat "$work/dpkg-i2.log" >&2; fail "dpkg -i again"; }
expect "a reinstall keeps the edited config" grep -q 'edited by check-package' /etc/mde-poller/config.toml
expect "... and its owner and mode" test "$(stat -c '%U:%G %a' /etc/mde-poller/config.toml)" = "root:mde-poller 640"

# What systemd's StateDirectory= would hold after a first run.
install -d -o mde-poller -g mde-poller -m 0700 /var/lib/mde-poller
install -o mde-poller -g mde-poller -m 0600 /dev/null /var/lib/mde-poller/state.db
dpkg -r mde-poller > "$work/dpkg-r.log" 2>&1 || { cat "$work/dpkg-r.log" >&2; fail "dpkg -r mde-poller"; }
expect "remove deletes the binary" test ! -e /usr/bin/mde-poller
expect "remove deletes the unit" test ! -e "$unit"
expect "remove keeps the dedup state /var/lib/mde-poller/state.db" test -f /var/lib/mde-poller/state.db
expect "remove keeps the config (a conffile)" test -f /etc/mde-poller/config.toml
dpkg -P mde-poller > "$work/dpkg-p.log" 2>&1 || { cat "$work/dpkg-p.log" >&2; fail "dpkg -P mde-poller"; }
expect "purge deletes /var/lib/mde-poller" test ! -e /var/lib/mde-poller
expect "purge deletes the config" test ! -e /etc/mde-poller/config.toml
expect "purge deletes the logrotate config" test ! -e /etc/logrotate.d/mde-poller
expect "purge leaves no package record" test -z "$(dpkg-query -W -f '${Status}' mde-poller 2>/dev/null || true)"
# Debian never deletes a system user (files it owned may remain elsewhere).
if id -u mde-poller > /dev/null 2>&1; then echo "note  the system user mde-poller stays after purge, as Debian does"; fi
echo "check-package: $checks checks passed (contents, install, remove, purge)"

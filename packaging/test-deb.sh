#!/usr/bin/env bash
# The Debian package test (issue 17): builds the .deb with cargo-deb, installs it with dpkg -i,
# checks what went where, validates the installed zones, serves the example zone with the
# installed files as the steerdns user with only the unit's capability, on loopback, asks it
# with dig, drains and reloads it, verifies the unit with systemd-analyze, and purges the
# package. scripts/test.sh runs it after `cargo test` (as root; CI does).
#
# Needs root (dpkg -i), a Debian system, and beyond the Rust toolchain: dig (dnsutils),
# systemd-analyze (systemd), adduser, setpriv (util-linux), perl, dpkg-shlibdeps (dpkg-dev) and
# objcopy (binutils) for cargo-deb, and cargo-deb, which this installs with cargo when missing. Listens on 127.0.0.1 only. Refuses to run where steerdns is
# installed already, as it purges the package at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0
started=$SECONDS
say() { echo "packaging/test-deb.sh: $*" >&2; }
fail() {
    say "FAILED: $*"
    exit 1
}

[[ $(id -u) == 0 ]] || fail "needs root (it installs and purges the package): sudo bash packaging/test-deb.sh"
missing=()
for tool in dig:dnsutils systemd-analyze:systemd adduser:adduser setpriv:util-linux perl:perl-base \
    dpkg-shlibdeps:dpkg-dev objcopy:binutils; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool#*:}")
done
((${#missing[@]} == 0)) || fail "needs ${missing[*]}: apt-get install --no-install-recommends ${missing[*]}"
status=$(dpkg-query -W -f='${Status}' steerdns 2>/dev/null || true)
if [[ -n $status && $status != *not-installed ]]; then
    fail "steerdns is on this machine ($status); this test would purge it and its configuration"
fi

# Build: one release build (cargo deb --no-build packages it), the .deb with cargo-deb.
if ! cargo deb --version 2>/dev/null | grep -qx "cargo-deb $CARGO_DEB_VERSION"; then
    say "installing cargo-deb $CARGO_DEB_VERSION"
    cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION"
fi
tools=$SECONDS
cargo build --release --locked --bin steerdns
built=$SECONDS
rm -rf target/debian
# --fast: lighter xz, the same files (27 MB at the default level, 30 MB so, 30 s less CPU).
cargo deb --no-build --locked --fast
deb=$(ls target/debian/steerdns_*.deb)
packaged=$SECONDS
say "built $deb ($(du -k "$deb" | cut -f1) KiB): cargo-deb ready in $((tools - started)) s, release build $((built - tools)) s, package $((packaged - built)) s"

work=$(mktemp -d)
pid=
cleanup() {
    [[ -n $pid ]] && kill "$pid" 2>/dev/null || true
    rm -rf "$work"
    dpkg --purge steerdns >/dev/null 2>&1 || true
}
trap cleanup EXIT

# Install.
dpkg -i "$deb"
for f in /usr/bin/steerdns /usr/lib/systemd/system/steerdns.service /etc/steerdns/node.yaml \
    /etc/steerdns/zones/example.yaml /usr/share/steerdns/geoip/dbip-city-lite-coarse-ipv4.mmdb \
    /usr/share/steerdns/geoip/dbip-country.mmdb /usr/share/steerdns/monitoring/alerts.yml \
    /usr/share/steerdns/monitoring/grafana-dashboard.json /usr/share/doc/steerdns/copyright \
    /usr/share/doc/steerdns/geoip/licenses/DBIP-LICENSE.txt; do
    [[ -f $f ]] || fail "$f is not installed"
done
conffiles=$(dpkg-query -W -f='${Conffiles}\n' steerdns | awk 'NF { print $1 }' | sort | tr '\n' ' ')
[[ $conffiles == "/etc/steerdns/node.yaml /etc/steerdns/zones/example.yaml " ]] ||
    fail "conffiles are: $conffiles"
uid=$(id -u steerdns) || fail "no steerdns user"
((uid < 1000)) || fail "steerdns is not a system user (uid $uid)"
[[ $(stat -c '%U:%G %a' /var/lib/steerdns) == "steerdns:steerdns 750" ]] ||
    fail "/var/lib/steerdns is $(stat -c '%U:%G %a' /var/lib/steerdns)"
[[ $(systemctl is-enabled steerdns.service 2>/dev/null || true) != enabled ]] ||
    fail "the unit is enabled on install"

# The installed zones pass the check, found by default (/etc/steerdns/zones) from anywhere.
out=$(cd / && steerdns check) || fail "steerdns check: $out"
[[ $out == "ok: zone api.example.com. (/etc/steerdns/zones/example.yaml, "*" names)" ]] ||
    fail "steerdns check said: $out"
steerdns check /etc/steerdns/zones >/dev/null || fail "steerdns check /etc/steerdns/zones"

# Serve with the installed node file as the unit does, as the steerdns user with only
# CAP_NET_BIND_SERVICE (bounding and ambient) and no new privileges; flags move DNS and the
# admin API to loopback ports the kernel picks, written to a ready file.
as_unit=(setpriv --reuid=steerdns --regid=steerdns --init-groups --no-new-privs
    --inh-caps=-all,+net_bind_service --ambient-caps=-all,+net_bind_service
    --bounding-set=-all,+net_bind_service --)
chown steerdns:steerdns "$work"
(cd /var/lib/steerdns && exec "${as_unit[@]}" /usr/bin/steerdns serve --config /etc/steerdns/node.yaml \
    --listen 127.0.0.1:0 --admin 127.0.0.1:0 --ready-file "$work/ready.json") 2>"$work/serve.log" &
pid=$!
for _ in $(seq 300); do
    [[ -f $work/ready.json ]] && break
    kill -0 "$pid" 2>/dev/null || fail "serve exited: $(cat "$work/serve.log")"
    sleep 0.1
done
[[ -f $work/ready.json ]] || fail "serve not ready after 30 s: $(cat "$work/serve.log")"
port_of() { sed -n "s/.*\"$1\":\"127\.0\.0\.1:\([0-9]*\)\".*/\1/p" "$work/ready.json"; }
dns_port=$(port_of dns)
admin=http://127.0.0.1:$(port_of admin)

# The README's first screen, exactly.
ask() { dig @127.0.0.1 -p "$dns_port" www.api.example.com +subnet="$1" +short +tries=1 +time=2 | sort | tr '\n' ' '; }
expect() {
    local got
    got=$(ask "$1")
    [[ $got == "$2" ]] || fail "www.api.example.com for $1: got '$got', want '$2'"
}
expect 81.2.69.0/24 "203.0.113.10 203.0.113.11 "
expect 8.8.8.0/24 "198.51.100.20 "
expect 1.1.1.0/24 "192.0.2.30 "

# A drain through the installed CLI is written to the state directory by the steerdns user,
# and London goes to the next DC until the undrain.
steerdns drain fra --reason "package test" --admin "$admin" >/dev/null
[[ $(stat -c %U /var/lib/steerdns/drains.json) == steerdns ]] || fail "drains.json: $(ls -l /var/lib/steerdns)"
expect 81.2.69.0/24 "198.51.100.20 "
steerdns undrain fra --admin "$admin" >/dev/null
expect 81.2.69.0/24 "203.0.113.10 203.0.113.11 "

# ExecReload's SIGHUP reloads the zones.
kill -HUP "$pid"
for _ in $(seq 100); do
    grep -q "zones reloaded" "$work/serve.log" && break
    sleep 0.1
done
grep -q "zones reloaded" "$work/serve.log" || fail "SIGHUP did not reload the zones: $(cat "$work/serve.log")"
kill -TERM "$pid"
status=0
wait "$pid" || status=$?
pid=
((status == 0)) || fail "serve exited with $status on SIGTERM: $(cat "$work/serve.log")"

# Port 53 needs the capability the unit gives: the steerdns user binds a privileged loopback
# port with it, and not without (skipped where the kernel lets anyone bind low ports).
bind_low() {
    "$@" perl -MSocket -e 'socket(S, PF_INET, SOCK_STREAM, 0) or die;
        for $p (1 .. 1023) { exit 0 if bind(S, sockaddr_in($p, inet_aton("127.0.0.1"))); exit 13 if $!{EACCES} }
        exit 1'
}
if (($(cat /proc/sys/net/ipv4/ip_unprivileged_port_start 2>/dev/null || echo 0) > 1)); then
    bind_low "${as_unit[@]}" || fail "the steerdns user cannot bind a port below 1024 with CAP_NET_BIND_SERVICE"
    status=0
    bind_low setpriv --reuid=steerdns --regid=steerdns --init-groups -- || status=$?
    ((status == 13)) || fail "the steerdns user's bind below 1024 without the capability: exit $status, not 13 (EACCES)"
fi

# The unit: systemd-analyze verify (no systemd needs to run) and its sandboxing score.
verify=$(systemd-analyze verify /usr/lib/systemd/system/steerdns.service 2>&1) ||
    fail "systemd-analyze verify: $verify"
[[ -z $verify ]] || fail "systemd-analyze verify warned: $verify"
exposure=$(systemd-analyze security --offline=true /usr/lib/systemd/system/steerdns.service 2>&1 | tail -1)
[[ $exposure =~ level\ for\ steerdns.service:\ [01]\.[0-9]\ OK ]] || fail "systemd-analyze security: $exposure"

# Purge: nothing left but the user.
dpkg --purge steerdns
for f in /usr/bin/steerdns /usr/lib/systemd/system/steerdns.service /etc/steerdns /var/lib/steerdns /usr/share/steerdns; do
    [[ ! -e $f ]] || fail "$f is still there after purge"
done
say "ok: installed, served, drained, reloaded, verified ($exposure) and purged in $((SECONDS - packaged)) s"

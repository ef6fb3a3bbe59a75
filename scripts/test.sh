#!/usr/bin/env bash
# The test command (README): makes sure what the tests need beyond Rust is here, then runs
# `cargo test` with any arguments given; without arguments, then the Debian package test too.
#
# Beyond the Rust toolchain the tests use Debian packages: chromium and a font (the status page
# test, tests/integration/ops.rs), docker-compose (the compose file test; `docker-compose config`
# needs no Docker engine), for the DNSSEC tests (tests/integration/dnssec.rs) two validators,
# bind9-dnsutils (delv, and dig) and unbound, and ldnsutils (ldns-key2ds; the tests run unbound
# themselves on loopback, the package's own service is not used), prometheus for its promtool
# (the alert rules' tests, tests/integration/monitoring.rs), and for packaging/test-deb.sh systemd
# (systemd-analyze), adduser, and dpkg-dev (dpkg-shlibdeps, which cargo-deb asks for the
# package's dependencies). When one is missing, this installs it as root through apt-get, or
# else stops at once, before building anything, with the one command to run: never half-way
# through the suite. Installing prometheus or unbound starts no server: services are kept from
# starting for the install (policy-rc.d), as in a container.
#
# The package test (packaging/test-deb.sh: build the .deb, dpkg -i, serve, purge) needs root;
# run as another user, this runs `cargo test`, then fails with the command to run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(chromium fonts-liberation docker-compose bind9-dnsutils unbound ldnsutils prometheus systemd adduser dpkg-dev)
missing=()
for p in "${packages[@]}"; do
    if command -v dpkg-query >/dev/null 2>&1; then
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    else
        # Not Debian: look for the programs themselves (the font cannot be checked this way).
        case $p in
        fonts-liberation) ;;
        bind9-dnsutils) command -v delv >/dev/null 2>&1 || missing+=("$p") ;;
        ldnsutils) command -v ldns-key2ds >/dev/null 2>&1 || missing+=("$p") ;;
        prometheus) command -v promtool >/dev/null 2>&1 || missing+=("$p") ;;
        dpkg-dev) command -v dpkg-shlibdeps >/dev/null 2>&1 || missing+=("$p") ;;
        systemd) command -v systemd-analyze >/dev/null 2>&1 || missing+=("$p") ;;
        *) command -v "$p" >/dev/null 2>&1 || missing+=("$p") ;;
        esac
    fi
done

if ((${#missing[@]} > 0)); then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "scripts/test.sh: installing what the tests need: ${missing[*]}" >&2
        export DEBIAN_FRONTEND=noninteractive
        # No service may start from this install (prometheus would): invoke-rc.d and
        # deb-systemd-invoke ask policy-rc.d, and 101 means "not now". An existing one stays.
        policy=
        if [[ ! -e /usr/sbin/policy-rc.d ]]; then
            policy=/usr/sbin/policy-rc.d
            printf '#!/bin/sh\n# scripts/test.sh: no services start while it installs packages.\nexit 101\n' >"$policy"
            chmod 755 "$policy"
            trap 'rm -f "$policy"' EXIT
        fi
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}"
        if [[ -n $policy ]]; then
            rm -f "$policy"
            trap - EXIT
        fi
        # Nor at the next boot, where systemd runs (unbound would ask the root servers).
        for svc in prometheus unbound; do
            if [[ " ${missing[*]} " == *" $svc "* && -d /run/systemd/system ]]; then
                systemctl disable --quiet "$svc.service" || true
            fi
        done
    else
        echo "scripts/test.sh: the tests need ${missing[*]}; install them, then run this again:" >&2
        echo "  sudo apt-get install --no-install-recommends ${missing[*]}" >&2
        exit 1
    fi
fi

if (($# > 0)); then
    exec cargo test --locked --features fuzzing "$@"
fi
cargo test --locked --features fuzzing
if [[ $(id -u) != 0 ]]; then
    echo "scripts/test.sh: cargo test passed; the package test installs a package, so run it as root:" >&2
    echo "  sudo bash packaging/test-deb.sh" >&2
    exit 1
fi
bash packaging/test-deb.sh

#!/usr/bin/env bash
# The test command (README): makes sure what the tests need beyond Rust is here, then runs
# `cargo test` with any arguments given.
#
# Beyond the Rust toolchain the integration tests use these Debian packages: chromium and a font
# (the status page test, tests/integration/ops.rs), docker-compose (the compose file test;
# `docker-compose config` needs no Docker engine), and for the DNSSEC tests
# (tests/integration/dnssec.rs) two validators, bind9-dnsutils (delv) and unbound, and
# ldnsutils (ldns-key2ds). The tests run unbound themselves on loopback; the package's own
# service is not used. When one is missing, this installs it as root
# through apt-get, or else stops at once, before building anything, with the one command to run:
# never half-way through the suite.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(chromium fonts-liberation docker-compose bind9-dnsutils unbound ldnsutils)
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
        *) command -v "$p" >/dev/null 2>&1 || missing+=("$p") ;;
        esac
    fi
done

if ((${#missing[@]} > 0)); then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "scripts/test.sh: installing what the tests need: ${missing[*]}" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}"
    else
        echo "scripts/test.sh: the tests need ${missing[*]}; install them, then run this again:" >&2
        echo "  sudo apt-get install --no-install-recommends ${missing[*]}" >&2
        exit 1
    fi
fi

exec cargo test --locked --features fuzzing "$@"

#!/usr/bin/env bash
# Side-by-side benchmark of steerdns, gdnsd (geoip plugin) and Knot DNS (geoip module) on
# loopback, with dnsperf. What it measures and how: bench/README.md.
#
#   bash bench/run.sh [--quick] [--keep] [--signed]
#
#   --quick   one rate (20000 qps), 5 s per run
#   --signed  only the signed workloads (issue 15): steerdns with its zone signed (a key from
#             `steerdns dnssec keygen`) beside Knot with mod-onlinesign (knot-sign), DO=0 and DO=1;
#             the same as BENCH_WORKLOADS="sign-geo-do0 sign-geo sign-nxdomain" BENCH_LIMIT=0
#   --keep    keep the temporary directory (configs, logs, dnsperf output)
#   --floor   also run two servers that do no DNS work on the UDP workloads, each query flipped
#             into an empty response in place: udp-floor (the recvmmsg/sendmmsg loop steerdns
#             uses, examples/udp_floor.rs) and uring-floor (io_uring: multishot recvmsg and one
#             system call per wake-up, examples/uring_floor.rs). Their CPU per query is what the
#             kernel path costs whatever a server does
#   --instructions   instead of the load: steerdns and gdnsd under valgrind's callgrind, the
#             user-space instructions per query of each workload (load-independent; the kernel's
#             work is not counted), BENCH_INSTR_QUERIES queries each (default 20000); with
#             BENCH_CACHE_SIM=1 also callgrind's cache simulation: data reads and writes, and
#             first-level data and instruction cache misses per query
#
# Environment: BENCH_RATES="20000 60000" (queries per second, space separated),
# BENCH_DURATION=10 (seconds per run), BENCH_REPEAT=1 (runs per row; the table shows medians),
# BENCH_SERVER_CPU=0, BENCH_CLIENT_CPU=1,
# BENCH_SCHED=fifo|nice (fifo, the default as root: SCHED_FIFO for servers and dnsperf; nice:
# BENCH_NICE, default -10 as root, else 0),
# BENCH_LIMIT=1 (0 skips the search for the rate where loss begins, on the geo workload, and the
# p99 at half that rate; off with --quick), BENCH_LIMIT_RATES="50000 100000 ... 500000",
# BENCH_LIMIT_DURATION=5, BENCH_WORKLOADS="geo geo-10k static aaaa nxdomain static-tcp" (a subset to
# run; the signed workloads sign-geo-do0 sign-geo sign-nxdomain run only when named, or with --signed).
#
# Installs nothing. Starts every server on 127.0.0.1 only, pinned to one core, and stops them on
# exit.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

QUICK=0
KEEP=0
INSTR=0
FLOOR=0
for arg in "$@"; do
    case "$arg" in
    --quick) QUICK=1 ;;
    --keep) KEEP=1 ;;
    --instructions) INSTR=1 ;;
    --floor) FLOOR=1 ;;
    --signed)
        BENCH_WORKLOADS="sign-geo-do0 sign-geo sign-nxdomain"
        BENCH_LIMIT=${BENCH_LIMIT:-0}
        ;;
    -h | --help) usage; exit 0 ;;
    *) echo "bench: unknown argument: $arg" >&2; usage >&2; exit 2 ;;
    esac
done
COMMAND_LINE="bash bench/run.sh${*:+ $*}"
for var in BENCH_CACHE_SIM BENCH_RATES BENCH_DURATION BENCH_REPEAT BENCH_SERVER_CPU BENCH_CLIENT_CPU BENCH_SCHED BENCH_NICE BENCH_LIMIT BENCH_LIMIT_RATES BENCH_LIMIT_DURATION BENCH_WORKLOADS; do
    if [[ -n "${!var:-}" ]]; then
        val=${!var}
        [[ "$val" == *" "* ]] && val="\"$val\""
        COMMAND_LINE="$var=$val $COMMAND_LINE"
    fi
done

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
export PATH="$PATH:/usr/sbin:/sbin"
# Servers must not talk to systemd or anything else outside the temp dir.
unset NOTIFY_SOCKET LISTEN_FDS LISTEN_PID

if ((QUICK)); then
    read -r -a RATES <<<"${BENCH_RATES:-20000}"
    DURATION=${BENCH_DURATION:-5}
else
    read -r -a RATES <<<"${BENCH_RATES:-20000 60000}"
    DURATION=${BENCH_DURATION:-10}
fi
REPEAT=${BENCH_REPEAT:-1}
if ((QUICK)); then LIMIT=${BENCH_LIMIT:-0}; else LIMIT=${BENCH_LIMIT:-1}; fi
read -r -a LIMIT_RATES <<<"${BENCH_LIMIT_RATES:-50000 100000 150000 200000 250000 300000 350000 400000 450000 500000}"
LIMIT_DURATION=${BENCH_LIMIT_DURATION:-5}
# Loss has begun at a rate when more than this share of the queries went unanswered.
LIMIT_LOSS_PCT=0.5
SERVER_CPU=${BENCH_SERVER_CPU:-0}
CLIENT_CPU=${BENCH_CLIENT_CPU:-1}
# Priority of the servers and dnsperf. Other work on a shared machine still runs on their cores.
#   fifo (default as root): SCHED_FIFO (chrt -f 1): a woken server or dnsperf preempts other work
#         at once, which takes most scheduler noise out of the latency figures on a busy machine;
#   nice (default otherwise): nice -10 as root, else 0; only a larger share of a contended core.
if ((EUID == 0)); then SCHED=${BENCH_SCHED:-fifo}; else SCHED=${BENCH_SCHED:-nice}; fi
if ((EUID == 0)); then NICE=${BENCH_NICE:--10}; else NICE=${BENCH_NICE:-0}; fi
case "$SCHED" in
nice)
    PRIO=(nice -n "$NICE")
    SCHED_DESC="nice $NICE"
    ;;
fifo)
    ((EUID == 0)) || { echo "bench: BENCH_SCHED=fifo needs root" >&2; exit 2; }
    PRIO=(chrt -f 1)
    SCHED_DESC="SCHED_FIFO priority 1"
    ;;
*) echo "bench: BENCH_SCHED must be nice or fifo" >&2; exit 2 ;;
esac
PIN_SERVER=("${PRIO[@]}" taskset -c "$SERVER_CPU")
PIN_CLIENT=("${PRIO[@]}" taskset -c "$CLIENT_CPU")
CLIENTS=4        # dnsperf -c: client sockets (UDP) or connections (TCP)
TIMEOUT=2        # dnsperf -t: a query unanswered after this many seconds counts as lost
MMDB="$REPO/geoip/dbip-city-lite-coarse-ipv4.mmdb"
ZONE=api.example.com
LOOPBACK=127.0.0.1

log() { printf '%s\n' "bench: $*" >&2; }
die() { log "$*"; exit 1; }

# --- 1. what must be installed -------------------------------------------------------------
missing=()
for tool in dnsperf gdnsd knotd knotc taskset dig perl awk; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
    log "missing: ${missing[*]}"
    pkgs="dnsperf gdnsd knot"
    if printf '%s\n' "${missing[@]}" | grep -qx dig; then pkgs="$pkgs bind9-dnsutils"; fi
    if printf '%s\n' "${missing[@]}" | grep -qx taskset; then pkgs="$pkgs util-linux"; fi
    echo "Install the tools the bench needs (Debian/Ubuntu), then run it again:" >&2
    echo "  apt-get install $pkgs" >&2
    exit 2
fi
[[ -f "$MMDB" ]] || die "GeoIP database not found: $MMDB"
(($(nproc) >= 2)) || log "warning: only $(nproc) CPU; server and dnsperf will share it"

# --- 2. build ------------------------------------------------------------------------------
log "building: cargo build --release --locked --bin steerdns"
cargo build --release --locked --bin steerdns
if ((FLOOR)); then
    log "building: cargo build --release --locked --example udp_floor --example uring_floor"
    cargo build --release --locked --example udp_floor --example uring_floor
fi
STEERDNS="${CARGO_TARGET_DIR:-$REPO/target}/release/steerdns"
[[ -x "$STEERDNS" ]] || die "built binary not found at $STEERDNS"

# --- temp dir, and stopping what we start ---------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/steerdns-bench.XXXXXX")
declare -A SERVER_PID=()
CLIENT_PIDS=()
cleanup() {
    local rc=$?
    local pid
    for pid in "${CLIENT_PIDS[@]}" "${SERVER_PID[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${CLIENT_PIDS[@]}" "${SERVER_PID[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if ((KEEP)) || ((rc != 0)); then
        log "kept $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Free loopback ports, distinct, for UDP and TCP.
USED_PORTS=" "
port_busy() {
    command -v ss >/dev/null 2>&1 || return 1
    ss -Hlnut "( sport = :$1 )" 2>/dev/null | grep -q .
}
pick_port() {
    local p
    for _ in $(seq 200); do
        p=$((20000 + RANDOM % 30000))
        [[ "$USED_PORTS" == *" $p "* ]] && continue
        port_busy "$p" && continue
        USED_PORTS="$USED_PORTS$p "
        echo "$p"
        return 0
    done
    die "no free port found"
}

# --- 3. the data, once; written below in each server's format -------------------------------
# Data centers: name, latitude, longitude, IPv4 endpoint, IPv6 endpoint.
DCS=(
    "fra 50.11 8.68 203.0.113.10 2001:db8:10::1"
    "iad 38.95 -77.45 198.51.100.20 2001:db8:20::1"
    "sin 1.35 103.82 192.0.2.30 2001:db8:30::1"
)
# Knot has no distance mode: continents map to the DC the distance rule picks for the
# networks below (Knot's geodb key is continent/code).
KNOT_CONTINENT_DC=("EU fra" "AF fra" "NA iad" "SA iad" "AS sin" "OC sin")
# Client networks (ECS) across six continents, with the DC nearest to each (checked with
# `steerdns explain` on the same database; close calls such as Johannesburg are left out).
GEO_NETS=(
    "81.2.69.0/24 fra" "89.160.20.0/24 fra" "85.214.0.0/24 fra" "195.113.0.0/24 fra"
    "77.88.8.0/24 fra"
    "41.32.0.0/24 fra" "197.210.0.0/24 fra" "41.248.0.0/24 fra" "102.0.0.0/24 fra"
    "8.8.8.0/24 iad" "13.107.246.0/24 iad" "24.48.0.0/24 iad" "9.9.9.0/24 iad"
    "200.160.0.0/24 iad" "190.210.0.0/24 iad" "186.0.0.0/24 iad" "2.16.0.0/24 iad"
    "202.12.27.0/24 sin" "180.76.76.0/24 sin" "49.44.0.0/24 sin" "175.16.199.0/24 sin"
    "1.1.1.0/24 sin" "203.2.218.0/24 sin" "27.252.0.0/24 sin"
)
NSTATIC=20
static_name() { printf 's%02d' "$1"; }
static_a() { echo "192.0.2.$((100 + $1))"; }
static_aaaa() { echo "2001:db8:100::$1"; }
static_txt() { echo "bench static record $(static_name "$1")"; }
STATIC_MX="10 mail.example.net."   # out of zone: no additional-section lookups anywhere
SERIAL=2026113001

dc_field() { # dc_field NAME INDEX: 1 latitude, 2 longitude, 3 IPv4 endpoint, 4 IPv6 endpoint
    local line f
    for line in "${DCS[@]}"; do
        read -r -a f <<<"$line"
        if [[ "${f[0]}" == "$1" ]]; then
            echo "${f[$2]}"
            return
        fi
    done
}

# steerdns ----------------------------------------------------------------------------------
mkdir -p "$WORK/steerdns/zones" "$WORK/steerdns/state"
{
    echo "zone: $ZONE"
    echo "ttl: 300"
    echo "soa: { primary: ns1, contact: hostmaster@example.com, serial: $SERIAL, refresh: 7200, retry: 3600, expire: 1209600, minimum: 60, ttl: 60 }"
    echo "nameservers:"
    echo "  ns1: [192.0.2.53]"
    echo "  ns2: [198.51.100.53]"
    echo "datacenters:"
    for line in "${DCS[@]}"; do
        read -r dc lat lon _ _ <<<"$line"
        echo "  $dc: { location: [$lat, $lon] }"
    done
    echo "records:"
    echo "  www:"
    echo "    service:"
    echo "      ttl: 30"
    echo "      policy: nearest"
    echo "      endpoints:"
    for line in "${DCS[@]}"; do
        read -r dc _ _ v4 v6 <<<"$line"
        echo "        $dc: [$v4, \"$v6\"]"
    done
    for i in $(seq "$NSTATIC"); do
        echo "  $(static_name "$i"): { A: $(static_a "$i"), AAAA: \"$(static_aaaa "$i")\", TXT: \"$(static_txt "$i")\", MX: \"$STATIC_MX\" }"
    done
} >"$WORK/steerdns/zones/$ZONE.yaml"
# The signed workloads (issue 15): steerdns's zone signed with a key made as an operator makes
# it. Queries without DO get the unsigned answers, the same bytes as from an unsigned zone.
SIGNED_RUN=0
[[ " ${BENCH_WORKLOADS:-} " == *" sign-"* ]] && SIGNED_RUN=1
if ((SIGNED_RUN)); then
    key_file=$(cd "$WORK/steerdns" && "$STEERDNS" dnssec keygen "$ZONE" --dir keys | head -n 1)
    [[ -f "$WORK/steerdns/$key_file" ]] || die "steerdns dnssec keygen made no key file ($key_file)"
    echo "dnssec: { key: ../$key_file }" >>"$WORK/steerdns/zones/$ZONE.yaml"
    log "steerdns's zone is signed with $key_file (ECDSA P-256, a CSK)"
fi

# RFC 1035 zone file shared by gdnsd and Knot; WWW_LINES goes where www is defined.
rfc1035_zone() { # rfc1035_zone WWW_LINES
    echo "\$ORIGIN $ZONE."
    echo "\$TTL 300"
    echo "@ 60 SOA ns1 hostmaster.example.com. $SERIAL 7200 3600 1209600 60"
    echo "@ NS ns1"
    echo "@ NS ns2"
    echo "ns1 A 192.0.2.53"
    echo "ns2 A 198.51.100.53"
    printf '%s\n' "$1"
    for i in $(seq "$NSTATIC"); do
        local n
        n=$(static_name "$i")
        echo "$n A $(static_a "$i")"
        echo "$n AAAA $(static_aaaa "$i")"
        echo "$n TXT \"$(static_txt "$i")\""
        echo "$n MX $STATIC_MX"
    done
}

# gdnsd -------------------------------------------------------------------------------------
mkdir -p "$WORK/gdnsd/zones"
rfc1035_zone "www 30 DYNA geoip!www" >"$WORK/gdnsd/zones/$ZONE"

# Knot --------------------------------------------------------------------------------------
mkdir -p "$WORK/knot/zones" "$WORK/knot/run" "$WORK/knot/db"
# Without a location match (or without the module) Knot answers www from the zone file: the
# first DC, as steerdns and gdnsd do for a client no database knows.
read -r _ _ _ fra4 fra6 <<<"${DCS[0]}"
rfc1035_zone "www 30 A $fra4
www 30 AAAA $fra6" >"$WORK/knot/zones/$ZONE.zone"
{
    echo "www.$ZONE:"
    for line in "${KNOT_CONTINENT_DC[@]}"; do
        read -r cont dc <<<"$line"
        echo "  - geo: \"$cont\""
        echo "    A: $(dc_field "$dc" 3)"
        echo "    AAAA: $(dc_field "$dc" 4)"
    done
} >"$WORK/knot/geo.conf"

PORT_STEERDNS=$(pick_port)
PORT_GDNSD=$(pick_port)
PORT_KNOT=$(pick_port)

cat >"$WORK/gdnsd/config" <<EOF
# Loopback only, one UDP and one TCP thread (the server gets one core), private run/state dirs.
options => {
  listen => [ $LOOPBACK:$PORT_GDNSD ]
  udp_threads => 1
  tcp_threads => 1
  run_dir => "$WORK/gdnsd/run"
  state_dir => "$WORK/gdnsd/state"
}
plugins => {
  geoip => {
    maps => {
      dcs => {
        geoip2_db => "$MMDB"
        datacenters => [ $(for l in "${DCS[@]}"; do set -- $l; printf '%s, ' "$1"; done | sed 's/, $//') ]
        # City auto mode: nearest DC by great-circle distance from the database's coordinates.
        auto_dc_coords => {
$(for l in "${DCS[@]}"; do set -- $l; echo "          $1 => [ $2, $3 ]"; done)
        }
      }
    }
    resources => {
      www => {
        map => dcs
        dcmap => {
$(for l in "${DCS[@]}"; do set -- $l; echo "          $1 => { addrs_v4 => [ $4 ], addrs_v6 => [ \"$5\" ] }"; done)
        }
      }
    }
  }
}
EOF

knot_conf() { # knot_conf WITH_GEOIP(0|1)
    cat <<EOF
# Loopback only, one UDP and one TCP worker (the server gets one core), private dirs.
server:
  rundir: "$WORK/knot/run"
  listen: $LOOPBACK@$PORT_KNOT
  udp-workers: 1
  tcp-workers: 1
  background-workers: 1
  edns-client-subnet: on
log:
  - target: stderr
    any: warning
database:
  storage: "$WORK/knot/db"
EOF
    # A module section must come before the zone that refers to it.
    if (($1)); then
        cat <<EOF
mod-geoip:
  - id: geo
    config-file: "$WORK/knot/geo.conf"
    ttl: 30
    mode: geodb
    geodb-file: "$MMDB"
    geodb-key: [ continent/code ]
EOF
    fi
    cat <<EOF
template:
  - id: default
    storage: "$WORK/knot/zones"
    journal-content: none
    zonefile-sync: -1
zone:
  - domain: $ZONE
    file: $ZONE.zone
EOF
    if (($1)); then
        echo "    module: mod-geoip/geo"
    fi
}
KNOT_GEOIP=1
knot_conf 1 >"$WORK/knot/knot.conf"
if ! knotc -c "$WORK/knot/knot.conf" conf-check >"$WORK/knot/conf-check.log" 2>&1; then
    if grep -qiE "unknown module|invalid module|mod-geoip" "$WORK/knot/conf-check.log"; then
        KNOT_GEOIP=0
        log "warning: Knot's geoip module is not installed (Debian: apt-get install knot-module-geoip);"
        log "         Knot answers www from its zone file (fra for everyone), and its geo rows are marked"
        knot_conf 0 >"$WORK/knot/knot.conf"
        knotc -c "$WORK/knot/knot.conf" conf-check >"$WORK/knot/conf-check.log" 2>&1 ||
            die "Knot config rejected: $(cat "$WORK/knot/conf-check.log")"
    else
        die "Knot config rejected: $(cat "$WORK/knot/conf-check.log")"
    fi
fi
KNOT_LABEL=knot
((KNOT_GEOIP)) || KNOT_LABEL="knot†"

# Knot with online signing (knot-sign), for the signed workloads: the same zone with www a
# static A/AAAA (fra; it has no geo), signed as it is answered by mod-onlinesign with a key
# Knot makes at start (ECDSA P-256, one key for everything as steerdns's CSK). Loopback only;
# no remotes, no notify, no ACLs, no DS submission: it contacts nothing.
mkdir -p "$WORK/knot-sign/zones" "$WORK/knot-sign/run" "$WORK/knot-sign/db"
cp "$WORK/knot/zones/$ZONE.zone" "$WORK/knot-sign/zones/$ZONE.zone"
PORT_KNOT_SIGN=$(pick_port)
PORT_UDP_FLOOR=$(pick_port)
PORT_URING_FLOOR=$(pick_port)
cat >"$WORK/knot-sign/knot.conf" <<EOF
server:
  rundir: "$WORK/knot-sign/run"
  listen: $LOOPBACK@$PORT_KNOT_SIGN
  udp-workers: 1
  tcp-workers: 1
  background-workers: 1
  edns-client-subnet: on
log:
  - target: stderr
    any: warning
database:
  storage: "$WORK/knot-sign/db"
policy:
  - id: online
    algorithm: ecdsap256sha256
    single-type-signing: on
mod-onlinesign:
  - id: sign
    policy: online
template:
  - id: default
    storage: "$WORK/knot-sign/zones"
    journal-content: none
    zonefile-sync: -1
zone:
  - domain: $ZONE
    file: $ZONE.zone
    module: mod-onlinesign/sign
EOF
if ((SIGNED_RUN)); then
    knotc -c "$WORK/knot-sign/knot.conf" conf-check >"$WORK/knot-sign/conf-check.log" 2>&1 ||
        die "Knot (onlinesign) config rejected: $(cat "$WORK/knot-sign/conf-check.log")"
fi

# --- query files ---------------------------------------------------------------------------
Q="$WORK/queries"
mkdir -p "$Q"
geo_nets=()
for line in "${GEO_NETS[@]}"; do geo_nets+=("${line%% *}"); done
perl "$REPO/bench/ecs-queries.pl" "$Q/geo.bin" "www.$ZONE" A,AAAA "${geo_nets[@]}"
# A resolver farm's view (issue 14): ECS from 12,000 distinct /24s spread over the unicast IPv4
# space (first octets 1-223 without 10, 127 and the other special /8s; the second octet steps by
# 53 per block of first octets, so no /24 repeats), A and AAAA each.
mapfile -t many_nets < <(perl -e '
    my @first = grep { !/^(10|100|127|169|172|192|198|203)$/ } 1 .. 223;
    for my $i (0 .. 11_999) {
        my ($a, $k) = ($first[$i % @first], int($i / @first));
        printf "%d.%d.%d.0/24\n", $a, ($k * 53) % 256, ($i * 29) % 256;
    }')
perl "$REPO/bench/ecs-queries.pl" "$Q/geo-10k.bin" "www.$ZONE" A,AAAA "${many_nets[@]}"
# The signed workloads: the resolver farm's 12,000 networks with DO=1 (and the same without).
perl "$REPO/bench/ecs-queries.pl" --do "$Q/sign-geo.bin" "www.$ZONE" A,AAAA "${many_nets[@]}"
for i in $(seq "$NSTATIC"); do
    for t in A TXT MX; do echo "$(static_name "$i").$ZONE $t"; done
done >"$Q/static.txt"
for i in $(seq "$NSTATIC"); do
    echo "$(static_name "$i").$ZONE AAAA"
    echo "www.$ZONE AAAA"
done >"$Q/aaaa.txt"
for i in $(seq 1000); do printf 'nx-%04d.%s A\n' "$i" "$ZONE"; done >"$Q/nxdomain.txt"

# Workloads: name, query file, dnsperf format flags, transport, what it is.
WORKLOADS=(
    "geo|$Q/geo.bin|-B|udp|www A+AAAA, ECS from ${#GEO_NETS[@]} /24s on 6 continents"
    "geo-10k|$Q/geo-10k.bin|-B|udp|www A+AAAA, ECS from ${#many_nets[@]} /24s all over IPv4"
    "static|$Q/static.txt|-e|udp|$NSTATIC static names x A, TXT, MX"
    "aaaa|$Q/aaaa.txt|-e|udp|AAAA: half static names, half www without ECS"
    "nxdomain|$Q/nxdomain.txt|-e|udp|1000 names that do not exist (NXDOMAIN + SOA)"
    "static-tcp|$Q/static.txt|-e|tcp|the static mix over TCP, $CLIENTS connections"
    "sign-geo-do0|$Q/geo-10k.bin|-B|udp|signed zone, DO=0 (unsigned answers): www A+AAAA, ECS from ${#many_nets[@]} /24s"
    "sign-geo|$Q/sign-geo.bin|-B|udp|signed zone, DO=1: www A+AAAA with RRSIG, ECS from ${#many_nets[@]} /24s"
    "sign-nxdomain|$Q/nxdomain.txt|-e -D|udp|signed zone, DO=1: 1000 names that do not exist (compact denial: NSEC + RRSIGs)"
)
# Which servers run a workload: the signed ones compare steerdns with Knot's online signing
# (gdnsd signs nothing), the others steerdns, gdnsd and Knot.
declare -A WL_SERVERS=()
for w in "${WORKLOADS[@]}"; do
    case "${w%%|*}" in
    sign-*) WL_SERVERS[${w%%|*}]="steerdns knot-sign" ;;
    *) WL_SERVERS[${w%%|*}]="steerdns gdnsd knot" ;;
    esac
    # The floors answer UDP only, and sign nothing.
    if ((FLOOR)) && [[ "${w%%|*}" != sign-* && "$w" == *"|udp|"* ]]; then
        WL_SERVERS[${w%%|*}]+=" udp-floor uring-floor"
    fi
done
runs_on() { [[ " ${WL_SERVERS[$1]} " == *" $2 "* ]]; } # runs_on WORKLOAD SERVER

GEO_WORKLOAD=${WORKLOADS[0]} # the loss-rate search runs it whatever BENCH_WORKLOADS says
if [[ -n "${BENCH_WORKLOADS:-}" ]]; then
    chosen=()
    for w in "${WORKLOADS[@]}"; do
        [[ " $BENCH_WORKLOADS " == *" ${w%%|*} "* ]] && chosen+=("$w")
    done
    ((${#chosen[@]})) || die "BENCH_WORKLOADS matches none of: geo geo-10k static aaaa nxdomain static-tcp sign-geo-do0 sign-geo sign-nxdomain"
    WORKLOADS=("${chosen[@]}")
else
    # By default the unsigned workloads only.
    chosen=()
    for w in "${WORKLOADS[@]}"; do [[ "$w" == sign-* ]] || chosen+=("$w"); done
    WORKLOADS=("${chosen[@]}")
fi

# --- 4. start the servers ------------------------------------------------------------------
# The servers the chosen workloads run on, in this order.
SERVERS=()
for s in steerdns gdnsd knot knot-sign udp-floor uring-floor; do
    for w in "${WORKLOADS[@]}"; do
        if runs_on "${w%%|*}" "$s"; then
            SERVERS+=("$s")
            break
        fi
    done
done
declare -A PORT=([steerdns]=$PORT_STEERDNS [gdnsd]=$PORT_GDNSD [knot]=$PORT_KNOT [knot-sign]=$PORT_KNOT_SIGN
    [udp-floor]=$PORT_UDP_FLOOR [uring-floor]=$PORT_URING_FLOOR)
declare -A LABEL=([steerdns]=steerdns [gdnsd]=gdnsd [knot]=$KNOT_LABEL [knot-sign]=knot-sign
    [udp-floor]=udp-floor [uring-floor]=uring-floor)
is_floor() { [[ "$1" == *-floor ]]; }
# The comparison with gdnsd and Knot (answer check, loss-rate search) needs all three.
FULL_SET=0
[[ " ${SERVERS[*]} " == *" gdnsd "* && " ${SERVERS[*]} " == *" knot "* ]] && FULL_SET=1
((FULL_SET)) || LIMIT=0

# --instructions: every server under callgrind, counting from a zeroed point (see section 6i).
VG=()
if ((INSTR)); then
    SERVERS=(steerdns gdnsd)
    command -v valgrind >/dev/null || die "--instructions needs valgrind (apt-get install valgrind)"
fi

start_server() {
    local s=$1
    ((INSTR)) && VG=(valgrind --tool=callgrind --callgrind-out-file="$WORK/$s/callgrind.%p")
    ((INSTR)) && [[ "${BENCH_CACHE_SIM:-0}" == 1 ]] && VG+=(--cache-sim=yes)
    case "$s" in
    steerdns)
        # RRL off: dnsperf asks the same names from one address far faster than any resolver
        # would, and gdnsd has no RRL (Knot's is off unless configured). No cap on queries per
        # TCP connection (neither gdnsd nor Knot has one): dnsperf does not reconnect when a
        # server closes a connection, so the default cap of 100,000 stalls it at 60,000 qps.
        RUST_LOG=warn "${PIN_SERVER[@]}" "${VG[@]}" "$STEERDNS" serve \
            --listen "$LOOPBACK:$PORT_STEERDNS" --admin "$LOOPBACK:0" \
            --zones "$WORK/steerdns/zones" --geoip "$MMDB" \
            --state-dir "$WORK/steerdns/state" --rrl off --tcp-max-queries 4000000000 \
            >"$WORK/steerdns/log" 2>&1 </dev/null &
        ;;
    gdnsd)
        "${PIN_SERVER[@]}" "${VG[@]}" gdnsd -c "$WORK/gdnsd" start >"$WORK/gdnsd/log" 2>&1 </dev/null &
        ;;
    knot)
        "${PIN_SERVER[@]}" knotd -c "$WORK/knot/knot.conf" >"$WORK/knot/log" 2>&1 </dev/null &
        ;;
    knot-sign)
        "${PIN_SERVER[@]}" knotd -c "$WORK/knot-sign/knot.conf" >"$WORK/knot-sign/log" 2>&1 </dev/null &
        ;;
    udp-floor | uring-floor)
        mkdir -p "$WORK/$s"
        "${PIN_SERVER[@]}" "$(dirname "$STEERDNS")/examples/${s/-/_}" "$LOOPBACK:${PORT[$s]}" \
            >"$WORK/$s/log" 2>&1 </dev/null &
        ;;
    esac
    SERVER_PID[$s]=$!
}

wait_ready() {
    local s=$1 pid=${SERVER_PID[$1]} t0=$SECONDS limit=60
    # Under callgrind (and its cache simulation above all) steerdns takes minutes to start.
    ((INSTR)) && limit=600
    while ((SECONDS - t0 < limit)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            log "$s exited during start-up; its log:"
            tail -n 30 "$WORK/$s/log" >&2
            exit 1
        fi
        if dig @"$LOOPBACK" -p "${PORT[$s]}" +time=1 +tries=1 +norecurse "$ZONE" SOA 2>/dev/null |
            grep -q 'status: NOERROR'; then
            return 0
        fi
        sleep 0.2
    done
    die "$s did not answer within $limit s (log: $WORK/$s/log)"
}

for s in "${SERVERS[@]}"; do
    start_server "$s"
done
for s in "${SERVERS[@]}"; do
    wait_ready "$s"
    log "$s ready on $LOOPBACK:${PORT[$s]} (pid ${SERVER_PID[$s]}, cpu $SERVER_CPU)"
done

# --- 4i. --instructions: user-space instructions per query under callgrind -------------------
# For each workload and server: zero the counters (callgrind_control -z), send
# BENCH_INSTR_QUERIES queries at a rate valgrind keeps up with, dump (callgrind_control -d), and
# divide the instructions of the dump (every thread of the process) by the answered queries.
if ((INSTR)); then
    NQ=${BENCH_INSTR_QUERIES:-20000}
    INSTR_MD="$REPO/bench/results-instructions.md"
    {
        echo "# steerdns bench --instructions: $(date -u '+%Y-%m-%d %H:%M UTC')"
        echo
        echo "- command: \`$COMMAND_LINE\`"
        echo "- machine: $(nproc) CPUs, $(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
        echo "- steerdns $(git -C "$REPO" log -1 --format=%h -- src Cargo.toml Cargo.lock), gdnsd $(gdnsd -h 2>&1 | awk '/^gdnsd version/ { print $3; exit }'), valgrind $(valgrind --version)"
        echo "- user-space instructions of the server process (all threads) per answered query, $NQ queries per row after a warm-up; the kernel's work is not counted"
        if [[ "${BENCH_CACHE_SIM:-0}" == 1 ]]; then
            echo "- with callgrind's cache simulation (--cache-sim=yes: a first-level cache of the host's sizes and an inclusive last level): data reads (Dr), data writes (Dw), first-level data read misses (D1mr) and instruction misses (I1mr) per query"
            echo
            echo "| workload | steerdns instr/query | gdnsd instr/query | steerdns / gdnsd | steerdns Dr / Dw / D1mr / I1mr | gdnsd Dr / Dw / D1mr / I1mr |"
            echo "|---|---:|---:|---:|---:|---:|"
        else
            echo
            echo "| workload | steerdns instr/query | gdnsd instr/query | steerdns / gdnsd |"
            echo "|---|---:|---:|---:|"
        fi
    } >"$INSTR_MD"
    for w in "${WORKLOADS[@]}"; do
        IFS='|' read -r wname file fmt transport _ <<<"$w"
        declare -A IPQ=() CACHE=()
        for s in "${SERVERS[@]}"; do
            pid=${SERVER_PID[$s]}
            # Warm-up: the whole query file once (`-n 1`), not counted. The geo-10k file has
            # 24,000 queries, more than the 3 s this once sent at this rate; a server that
            # caches per network or place then counted first sightings a steady state does not
            # have (gdnsd builds its whole network map at start-up).
            timeout 600 dnsperf -s "$LOOPBACK" -p "${PORT[$s]}" -m "$transport" -d "$file" $fmt \
                -c "$CLIENTS" -n 1 -l 300 -Q 2000 -t 5 >/dev/null 2>&1 </dev/null || true
            callgrind_control -z "$pid" >/dev/null
            before=$(ls "$WORK/$s"/callgrind.* 2>/dev/null | wc -l)
            out="$WORK/instr-$s-$wname"
            timeout 600 dnsperf -s "$LOOPBACK" -p "${PORT[$s]}" -m "$transport" -d "$file" $fmt \
                -c "$CLIENTS" -l $((NQ / 2000)) -Q 2000 -t 5 >"$out" 2>&1 </dev/null || true
            callgrind_control -d "$pid" >/dev/null
            sleep 1
            dump=$(ls -t "$WORK/$s"/callgrind.* | head -n 1)
            ir=$(awk '/^(summary|totals):/ { print $2; exit }' "$dump")
            done_q=$(awk '/Queries completed:/ { print $3 }' "$out")
            IPQ[$s]=$(awk -v i="${ir:-0}" -v n="${done_q:-0}" 'BEGIN { if (n > 0) printf "%.0f", i / n; else print "-" }')
            # The events line names the columns of the totals line.
            CACHE[$s]=$(awk -v n="${done_q:-0}" '
                /^events:/ { for (i = 2; i <= NF; i++) col[$i] = i }
                /^(summary|totals):/ && !done {
                    done = 1
                    if (n == 0 || !("D1mr" in col)) { print "-"; exit }
                    printf "%.0f / %.0f / %.1f / %.2f", $col["Dr"] / n, $col["Dw"] / n, $col["D1mr"] / n, $col["I1mr"] / n
                }' "$dump")
            log "$s $wname: ${IPQ[$s]} instructions/query ($ir over $done_q queries; dump $before -> $dump)"
        done
        ratio=$(awk -v a="${IPQ[steerdns]}" -v b="${IPQ[gdnsd]}" 'BEGIN { if (b > 0) printf "%.2f×", a / b; else print "-" }')
        if [[ "${BENCH_CACHE_SIM:-0}" == 1 ]]; then
            echo "| $wname | ${IPQ[steerdns]} | ${IPQ[gdnsd]} | $ratio | ${CACHE[steerdns]} | ${CACHE[gdnsd]} |" >>"$INSTR_MD"
        else
            echo "| $wname | ${IPQ[steerdns]} | ${IPQ[gdnsd]} | $ratio |" >>"$INSTR_MD"
        fi
        unset IPQ CACHE
    done
    log "written to $INSTR_MD"
    cat "$INSTR_MD"
    exit 0
fi

# --- 5. do they give the same answers? -----------------------------------------------------
# A query's answer, normalised: rcode, then the answer records (name ttl class type data),
# sorted, joined with "; ". The ECS scope is not compared (gdnsd merges networks into larger
# ones; steerdns caps the scope at /24).
answer_of() { # answer_of SERVER NAME TYPE [SUBNET]
    local out
    out=$(dig @"$LOOPBACK" -p "${PORT[$1]}" +time=2 +tries=2 +norecurse "$2" "$3" ${4:+"+subnet=$4"} \
        +noall +comments +answer 2>&1) || true
    local rcode
    rcode=$(sed -n 's/.*status: \([A-Z]*\),.*/\1/p' <<<"$out" | head -n 1)
    local rrs
    rrs=$(grep -v '^;' <<<"$out" | awk 'NF >= 5 { $1 = $1; print }' | sort | paste -sd ';' - | sed 's/;/; /g')
    echo "${rcode:-NO-ANSWER}${rrs:+ $rrs}"
}

CHECK_MD="$WORK/checks.md"
MISMATCHES=0
KNOT_ONLY=0
CHECKS=()
((FULL_SET)) && for line in "${GEO_NETS[@]}"; do
    read -r net dc <<<"$line"
    CHECKS+=("www.$ZONE|A|$net|$dc")
done
((FULL_SET)) && CHECKS+=(
    "www.$ZONE|AAAA|81.2.69.0/24|fra" "www.$ZONE|AAAA|8.8.8.0/24|iad" "www.$ZONE|AAAA|1.1.1.0/24|sin"
    "www.$ZONE|A||fra" "www.$ZONE|AAAA||fra"
    "s01.$ZONE|A||" "s07.$ZONE|TXT||" "s13.$ZONE|MX||" "s20.$ZONE|AAAA||"
    "nx-0001.$ZONE|A||" "$ZONE|SOA||"
)
{
    echo "| query | ECS | expected DC | steerdns | gdnsd | $KNOT_LABEL | same? |"
    echo "|---|---|---|---|---|---|---|"
} >"$CHECK_MD"
for c in "${CHECKS[@]}"; do
    IFS='|' read -r name type subnet dc <<<"$c"
    declare -A got=()
    for s in "${SERVERS[@]}"; do
        is_floor "$s" || got[$s]=$(answer_of "$s" "$name" "$type" "$subnet")
    done
    verdict=ok
    for s in gdnsd knot; do
        [[ "${got[$s]}" == "${got[steerdns]}" ]] || verdict="DIFFERS"
    done
    if [[ -n "$dc" ]]; then
        want4=$(dc_field "$dc" 3)
        want6=$(dc_field "$dc" 4)
        [[ "$type" == A && "${got[steerdns]}" != *"A $want4"* ]] && verdict="DIFFERS (steerdns not $dc)"
        [[ "$type" == AAAA && "${got[steerdns]}" != *"AAAA $want6"* ]] && verdict="DIFFERS (steerdns not $dc)"
    fi
    if ((!KNOT_GEOIP)) && [[ "$verdict" == DIFFERS && "$name" == "www.$ZONE" && -n "$subnet" &&
        "${got[gdnsd]}" == "${got[steerdns]}" ]]; then
        verdict="DIFFERS (Knot: no geoip module)"
        KNOT_ONLY=$((KNOT_ONLY + 1))
    fi
    [[ "$verdict" == ok ]] || MISMATCHES=$((MISMATCHES + 1))
    printf '| %s %s | %s | %s | %s | %s | %s | %s |\n' "$name" "$type" "${subnet:--}" "${dc:--}" \
        "${got[steerdns]}" "${got[gdnsd]}" "${got[knot]}" "$verdict" >>"$CHECK_MD"
    unset got
done
# The signed servers: DO=1 answers carry RRSIGs (a service answer, and a denial's NSEC and SOA).
SIGN_CHECK_MD="$WORK/sign-checks.md"
: >"$SIGN_CHECK_MD"
for s in steerdns knot-sign; do
    [[ " ${SERVERS[*]} " == *" $s "* ]] || continue
    # steerdns's zone is signed only for the signed workloads (knot-sign runs only for them).
    [[ "$s" == steerdns ]] && ((!SIGNED_RUN)) && continue
    for c in "www.$ZONE|A|81.2.69.0/24|answer" "nx-0001.$ZONE|A||authority"; do
        IFS='|' read -r name type subnet section <<<"$c"
        out=$(dig @"$LOOPBACK" -p "${PORT[$s]}" +time=2 +tries=2 +norecurse +dnssec "$name" "$type" \
            ${subnet:+"+subnet=$subnet"} +noall +comments +"$section" 2>&1 || true)
        rrsigs=$(grep -v '^;' <<<"$out" | awk '$4 == "RRSIG"' | wc -l)
        nsec=$(grep -v '^;' <<<"$out" | awk '$4 == "NSEC"' | wc -l)
        rcode=$(sed -n 's/.*status: \([A-Z]*\),.*/\1/p' <<<"$out" | head -n 1)
        echo "- $s: $name $type DO=1: ${rcode:-NO-ANSWER}, $rrsigs RRSIG and $nsec NSEC in the $section section" >>"$SIGN_CHECK_MD"
        if ((rrsigs == 0)); then
            MISMATCHES=$((MISMATCHES + 1))
            log "WARNING: $s sent no RRSIG for $name $type with DO=1"
        fi
    done
done
[[ -s "$SIGN_CHECK_MD" ]] && cat "$SIGN_CHECK_MD" >&2
if ((MISMATCHES)); then
    log "WARNING: the servers differ on $MISMATCHES of ${#CHECKS[@]} sample queries ($KNOT_ONLY of them only because Knot has no geoip module):"
    grep 'DIFFERS' "$CHECK_MD" >&2 || true
else
    log "all servers give the same answers to ${#CHECKS[@]} sample queries"
fi

# --- 6. load ---------------------------------------------------------------------------------
CLK_TCK=$(getconf CLK_TCK)
# utime + stime are charged by sampling at each tick, then scaled by the kernel to the scheduler's
# exact run time (the first field of /proc/PID/task/*/schedstat): on 2026-12-08 the two agreed
# within 0.3% per run here, so the spread between repeats is the machine's, not the counting's.
proc_cpu_ticks() { # utime + stime of a process (all its threads)
    local stat
    stat=$(cat "/proc/$1/stat")
    stat=${stat##*) }              # fields from 3 on; the command name may contain spaces
    awk '{ print $12 + $13 }' <<<"$stat"
}
core_busy_ticks() { # busy ticks of one core (all but idle and iowait), and all ticks
    # Fields 2-9: user nice system idle iowait irq softirq steal (guest time is inside user).
    awk -v c="cpu$1" '$1 == c { t = 0; for (i = 2; i <= 9; i++) t += $i; print t - $5 - $6, t }' /proc/stat
}
rss_kib() { awk '/^VmRSS:/ { r = $2 } /^RssAnon:/ { a = $2 } END { print r, a }' "/proc/$1/status"; }

RESULTS="$WORK/results.tsv"
: >"$RESULTS"
run_load() { # run_load SERVER WORKLOAD-LINE RATE REPEAT [RESULTS-FILE [DURATION]]
    local s=$1 rate=$3 rep=$4 results=${5:-$RESULTS} duration=${6:-$DURATION}
    IFS='|' read -r wname file fmt transport _ <<<"$2"
    local pid=${SERVER_PID[$s]}
    local out="$WORK/dnsperf-$s-$wname-$rate-$rep"
    kill -0 "$pid" 2>/dev/null || die "$s (pid $pid) is not running any more; log: $WORK/$s/log"
    local cpu0 core0 core0_all
    cpu0=$(proc_cpu_ticks "$pid")
    read -r core0 core0_all < <(core_busy_ticks "$SERVER_CPU")
    # Bounded: a dnsperf that hangs (it does not reconnect when a server closes a TCP connection)
    # must not hang the bench.
    timeout $((duration + TIMEOUT + 30)) "${PIN_CLIENT[@]}" dnsperf -s "$LOOPBACK" -p "${PORT[$s]}" \
        -m "$transport" -d "$file" $fmt \
        -c "$CLIENTS" -l "$duration" -Q "$rate" -t "$TIMEOUT" -v >"$out.v" 2>"$out.err" &
    CLIENT_PIDS=($!)
    wait "${CLIENT_PIDS[0]}" || log "dnsperf exited non-zero for $s $wname $rate (see $out.err)"
    CLIENT_PIDS=()
    local cpu1 core1 core1_all rss anon
    cpu1=$(proc_cpu_ticks "$pid")
    read -r core1 core1_all < <(core_busy_ticks "$SERVER_CPU")
    read -r rss anon < <(rss_kib "$pid")
    # Summary lines and per-query latencies from dnsperf's verbose output.
    grep -v '^>' "$out.v" >"$out.summary" || true
    local completed lost_pct qps resp_size rcodes
    completed=$(awk '/Queries completed:/ { print $3 }' "$out.summary")
    lost_pct=$(awk '/Queries lost:/ { gsub(/[()%]/, "", $4); print $4 }' "$out.summary")
    qps=$(awk '/Queries per second:/ { printf "%.0f", $4 }' "$out.summary")
    resp_size=$(awk '/Average packet size:/ { print $NF }' "$out.summary")
    rcodes=$(awk -F': *' '/Response codes:/ { print $2 }' "$out.summary" | sed 's/ ([0-9.]*%)//g')
    # Percentiles over answered queries, in microseconds (dnsperf prints seconds with 6 digits).
    local pcts
    pcts=$(awk '$1 == ">" && $2 != "T" && $2 != "I" { h[int($NF * 1e6 + 0.5)]++ } END { for (b in h) print b, h[b] }' "$out.v" |
        sort -n | awk '{ b[NR] = $1; c[NR] = $2; n += $2 }
            END {
                if (n == 0) { print "- - -"; exit }
                split("0.5 0.99 0.999", q, " "); k = 1; cum = 0
                for (i = 1; i <= NR && k <= 3; i++) {
                    cum += c[i]
                    while (k <= 3 && cum >= q[k] * n) { r[k] = b[i]; k++ }
                }
                print r[1], r[2], r[3]
            }')
    rm -f "$out.v"
    local cpu_us other_pct
    cpu_us=$(awk -v d=$((cpu1 - cpu0)) -v n="${completed:-0}" -v hz="$CLK_TCK" \
        'BEGIN { if (n > 0) printf "%.2f", d * 1e6 / hz / n; else print "-" }')
    # Work on the server's core that was not the server's (other processes, or softirq work
    # not charged to any process), as a share of the core: a noise indicator.
    other_pct=$(awk -v b=$((core1 - core0)) -v a=$((core1_all - core0_all)) -v s=$((cpu1 - cpu0)) \
        'BEGIN { if (a > 0) { o = (b - s) * 100 / a; if (o < 0) o = 0; printf "%.0f", o } else print "-" }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$s" "$wname" "$rate" "${qps:-0}" \
        "${lost_pct:-100}" $pcts "$cpu_us" "$rss" "${resp_size:--}" "$other_pct" "${rcodes:--}" "$anon" "$rep" >>"$results"
    log "$(printf '%-11s %-10s %6s qps: answered %6s qps, lost %5s%%, p50/p99/p99.9 %s us, %s us CPU/query' \
        "$s" "$wname" "$rate" "${qps:-0}" "${lost_pct:-?}" "$(tr ' ' / <<<"$pcts")" "$cpu_us")"
}

# Warm-up, not measured: page in the GeoIP database and code, fill caches.
for s in "${SERVERS[@]}"; do
    for w in "${WORKLOADS[@]}"; do
        runs_on "${w%%|*}" "$s" || continue
        IFS='|' read -r _ file fmt transport _ <<<"$w"
        timeout $((TIMEOUT + 30)) "${PIN_CLIENT[@]}" dnsperf -s "$LOOPBACK" -p "${PORT[$s]}" \
            -m "$transport" -d "$file" $fmt \
            -c "$CLIENTS" -l 1 -Q "${RATES[0]}" -t "$TIMEOUT" >/dev/null 2>&1 </dev/null &
        CLIENT_PIDS=($!)
        wait "${CLIENT_PIDS[0]}" || true
        CLIENT_PIDS=()
    done
done

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "load: ${#WORKLOADS[@]} workloads x ${#RATES[@]} rate(s) x ${#SERVERS[@]} servers, ${DURATION}s each (load average $LOAD_BEFORE)"
# Interleaved (workload, rate, then server) so that background load drifts over all servers alike.
for w in "${WORKLOADS[@]}"; do
    for rate in "${RATES[@]}"; do
        for rep in $(seq "$REPEAT"); do
            for s in "${SERVERS[@]}"; do
                runs_on "${w%%|*}" "$s" || continue
                run_load "$s" "$w" "$rate" "$rep"
                sleep 1
            done
        done
    done
done

# --- 6m. memory, counted both ways --------------------------------------------------------
# steerdns copies the GeoIP database into a memfd: all of it is resident (shared memory, not
# evictable), but RSS counts only the pages its lookups touched. gdnsd and Knot map the file:
# its pages are page cache (evictable, shared with any reader), RSS counts the touched ones.
# So the table's RSS under-counts steerdns's database; here each server's RSS, PSS and their
# anon/file/shmem parts sit beside the database's own size and kind.
MEMORY="$WORK/memory.md"
{
    echo "| server | RSS MiB | PSS MiB | anon MiB | file MiB | shmem MiB | GeoIP database | database MiB | RSS + untouched database MiB |"
    echo "|---|---:|---:|---:|---:|---:|---|---:|---:|"
    for s in "${SERVERS[@]}"; do
        is_floor "$s" && continue
        pid=${SERVER_PID[$s]}
        read -r rss pss anon file shmem < <(awk '
            /^Rss:/ { r = $2 } /^Pss:/ { p = $2 } /^Anonymous:/ { a = $2 }
            END { print r, p, a }' "/proc/$pid/smaps_rollup" | tr '\n' ' ';
            awk '/^RssFile:/ { f = $2 } /^RssShmem:/ { m = $2 } END { print f, m }' "/proc/$pid/status")
        db_kind="file mapping (page cache)"
        db_kib=$(( $(stat -c %s "$MMDB") / 1024 ))
        if [[ $s == steerdns ]]; then
            # The memfd's descriptor is closed once it is mapped: its mappings tell.
            memfd_kib=0
            while read -r range _ _ _ _ path; do
                [[ $path == /memfd:* ]] || continue
                memfd_kib=$(( memfd_kib + (0x${range#*-} - 0x${range%-*}) / 1024 ))
            done <"/proc/$pid/maps"
            if ((memfd_kib > 0)); then
                db_kind="memfd (resident, not evictable)"
                db_kib=$memfd_kib
            fi
        fi
        # The database pages RSS does not count yet: its size less what RSS holds of it
        # (shmem for the memfd, at most the file part for a mapping).
        held=$shmem
        [[ $s == steerdns ]] || held=$(( file < db_kib ? file : db_kib ))
        untouched=$(( db_kib > held ? db_kib - held : 0 ))
        awk -v s="$s" -v r="$rss" -v p="$pss" -v a="$anon" -v f="$file" -v m="$shmem" -v k="$db_kind" -v d="$db_kib" -v u="$untouched" \
            'BEGIN { printf "| %s | %.1f | %.1f | %.1f | %.1f | %.1f | %s | %.1f | %.1f |\n", s, r/1024, p/1024, a/1024, f/1024, m/1024, k, d/1024, (r+u)/1024 }'
    done
} >"$MEMORY"

# --- 6b. where loss begins, and p99 at half that rate (geo workload) -------------------------
# For each server: the offered rate goes up in steps until more than LIMIT_LOSS_PCT% of the
# queries are lost; that rate is where loss begins. Then a run at half of it gives the p99 the
# goal compares ("p99 at 50% of the rate where loss begins"). If no step loses queries, the
# limit is above the last step and half the last step is used, marked ">"; if dnsperf cannot
# send the offered rate (its own core is saturated) the search stops there, marked likewise.
LIMITS="$WORK/limits.tsv"
HALF="$WORK/half.tsv"
: >"$LIMITS"
: >"$HALF"
if ((LIMIT)); then
    for s in "${SERVERS[@]}"; do
        is_floor "$s" && continue
        steps="$WORK/steps-$s.tsv"
        : >"$steps"
        onset=""
        for rate in "${LIMIT_RATES[@]}"; do
            run_load "$s" "$GEO_WORKLOAD" "$rate" "limit" "$steps" "$LIMIT_DURATION"
            sleep 1
            lost=$(tail -n 1 "$steps" | cut -f5)
            got=$(tail -n 1 "$steps" | cut -f4)
            if awk -v l="$lost" -v m="$LIMIT_LOSS_PCT" 'BEGIN { exit !(l + 0 > m) }'; then
                onset=$rate
                break
            fi
            # Nothing lost, but dnsperf did not reach the offered rate: its own core is the
            # limit, not the server.
            if awk -v g="$got" -v r="$rate" 'BEGIN { exit !(g + 0 < 0.9 * r) }'; then
                onset="client:$got"
                break
            fi
        done
        if [[ "$onset" == client:* ]]; then
            half=$((${onset#client:} / 2))
            shown=">${onset#client:} (dnsperf's limit)"
        elif [[ -n "$onset" ]]; then
            half=$((onset / 2))
            shown=$onset
        else
            last=${LIMIT_RATES[${#LIMIT_RATES[@]} - 1]}
            half=$((last / 2))
            shown=">$last"
        fi
        # Answered QPS at the step where loss began (or the last step).
        answered=$(tail -n 1 "$steps" | cut -f4)
        printf '%s\t%s\t%s\t%s\n' "$s" "$shown" "$answered" "$half" >>"$LIMITS"
        log "$s: loss begins at $shown qps offered (answered $answered qps there); p99 measured at $half qps"
        for rep in $(seq "$REPEAT"); do
            run_load "$s" "$GEO_WORKLOAD" "$half" "$rep" "$HALF"
            sleep 1
        done
    done
fi
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# --- 7. the table ----------------------------------------------------------------------------
CPU_MODEL=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
ver_dnsperf=$(dnsperf -h 2>&1 | awk '/^Version/ { print $2; exit }')
ver_gdnsd=$(gdnsd -h 2>&1 | awk '/^gdnsd version/ { print $3; exit }' || true)
ver_knot=$(knotd -V 2>&1 | awk '{ print $NF; exit }')
# The last commit that changed the server's code (bench-only commits do not count), and whether
# that code has uncommitted changes.
ver_steerdns=$(git -C "$REPO" log -1 --format=%h -- src Cargo.toml Cargo.lock 2>/dev/null || true)
ver_steerdns=${ver_steerdns:-unknown}
git -C "$REPO" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || ver_steerdns="$ver_steerdns+uncommitted changes"

# awk functions for both tables: num(x), and median(key, col) of the numbers in
# val[key, 1..cnt[key], col].
AWK_MEDIAN='
        function num(x) { return x ~ /^[0-9.]+$/ }
        function median(key, col,    n, i, j, t, v) {
            n = 0
            for (i = 1; i <= cnt[key]; i++) if (num(val[key, i, col])) v[++n] = val[key, i, col] + 0
            if (n == 0) return "-"
            for (i = 2; i <= n; i++) { t = v[i]; for (j = i - 1; j >= 1 && v[j] > t; j--) v[j + 1] = v[j]; v[j + 1] = t }
            return (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
        }
'

# One row per (server, workload, rate): with BENCH_REPEAT > 1, the median of each figure over the
# repeats, and the range of CPU per query; RSS is the largest seen.
table() {
    echo "| server | workload | rate | answered QPS | loss | p50 µs | p99 µs | p99.9 µs | CPU µs/query | RSS MiB (anon) | resp B | CPU vs gdnsd | p99 vs gdnsd | other on cpu$SERVER_CPU |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    awk -F'\t' -v knot="$KNOT_LABEL" "$AWK_MEDIAN"'
        function range(key, col,    i, lo, hi, x) {
            lo = ""; hi = ""
            for (i = 1; i <= cnt[key]; i++) {
                x = val[key, i, col]
                if (!num(x)) continue
                x += 0
                if (lo == "" || x < lo) lo = x
                if (hi == "" || x > hi) hi = x
            }
            return lo == "" ? "" : sprintf(" (%.2f–%.2f)", lo, hi)
        }
        function fmt(x, f) { return num(x) ? sprintf(f, x) : "-" }
        function ratio(a, b) { return (num(a) && num(b) && b > 0) ? sprintf("%.2f×", a / b) : "-" }
        {
            key = $1 SUBSEP $2 SUBSEP $3
            if (!(key in cnt)) { order[++nkeys] = key; cnt[key] = 0 }
            cnt[key]++
            for (c = 1; c <= 14; c++) val[key, cnt[key], c] = $c
            if ($10 + 0 > rss[key] + 0) { rss[key] = $10; anon[key] = $14 }
        }
        END {
            for (k = 1; k <= nkeys; k++) {
                key = order[k]
                split(key, f, SUBSEP)
                for (c = 4; c <= 12; c++) m[key, c] = median(key, c)
            }
            for (k = 1; k <= nkeys; k++) {
                key = order[k]
                split(key, f, SUBSEP)
                g = "gdnsd" SUBSEP f[2] SUBSEP f[3]
                name = f[1] == "knot" ? knot : f[1]
                vs = (f[1] == "steerdns" || f[1] ~ /-floor$/)
                rc = vs ? ratio(m[key, 9], m[g, 9]) : ""
                rp = (f[1] == "steerdns") ? ratio(m[key, 7], m[g, 7]) : ""
                cpu = num(m[key, 9]) ? sprintf("%.2f", m[key, 9]) : "-"
                if (cnt[key] > 1) cpu = cpu range(key, 9)
                printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %.1f (%.1f) | %s | %s | %s | %s |\n",
                    name, f[2], f[3], fmt(m[key, 4], "%.0f"), fmt(m[key, 5], "%.2f%%"), fmt(m[key, 6], "%.0f"),
                    fmt(m[key, 7], "%.0f"), fmt(m[key, 8], "%.0f"), cpu,
                    rss[key] / 1024, anon[key] / 1024, fmt(m[key, 11], "%.0f"), rc, rp, fmt(m[key, 12], "%.0f%%")
            }
        }' "$RESULTS"
}

# Signed beside unsigned (issue 15): per server and rate, the median CPU per query of DO=1
# answers over that of DO=0 answers from the same zone, and steerdns's over Knot's.
signed_table() {
    echo "| server | rate | CPU µs/query DO=0 (sign-geo-do0) | DO=1 (sign-geo) | signed / unsigned | DO=1 NXDOMAIN (sign-nxdomain) | sign-geo: steerdns / knot-sign |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    awk -F'\t' "$AWK_MEDIAN"'
        function ratio(a, b) { return (num(a) && num(b) && b > 0) ? sprintf("%.2f×", a / b) : "-" }
        $2 ~ /^sign-/ {
            key = $1 SUBSEP $2 SUBSEP $3
            cnt[key]++
            val[key, cnt[key], 9] = $9
            if (!(($1 SUBSEP $3) in seen)) { seen[$1 SUBSEP $3] = 1; order[++n] = $1 SUBSEP $3 }
        }
        END {
            for (k = 1; k <= n; k++) {
                split(order[k], f, SUBSEP)
                u = median(f[1] SUBSEP "sign-geo-do0" SUBSEP f[2], 9)
                d = median(f[1] SUBSEP "sign-geo" SUBSEP f[2], 9)
                x = median(f[1] SUBSEP "sign-nxdomain" SUBSEP f[2], 9)
                vs = f[1] == "steerdns" ? ratio(d, median("knot-sign" SUBSEP "sign-geo" SUBSEP f[2], 9)) : ""
                printf "| %s | %s | %s | %s | %s | %s | %s |\n", f[1], f[2], u, d, ratio(d, u), x, vs
            }
        }' "$RESULTS"
}

limit_table() {
    echo "| server | loss begins at (offered qps) | answered qps there | half rate (qps) | p50 µs | p99 µs | p99.9 µs | CPU µs/query | p99 vs gdnsd |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    awk -F'\t' -v knot="$KNOT_LABEL" "$AWK_MEDIAN"'
        FNR == NR { onset[$1] = $2; answered[$1] = $3; half[$1] = $4; order[++n] = $1; next }
        { cnt[$1]++; for (c = 1; c <= 14; c++) val[$1, cnt[$1], c] = $c }
        END {
            for (k = 1; k <= n; k++) {
                s = order[k]
                for (c = 6; c <= 9; c++) m[s, c] = median(s, c)
            }
            for (k = 1; k <= n; k++) {
                s = order[k]
                r = (s == "steerdns" && num(m[s, 7]) && num(m["gdnsd", 7]) && m["gdnsd", 7] > 0) ? sprintf("%.2f×", m[s, 7] / m["gdnsd", 7]) : ""
                printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", (s == "knot" ? knot : s), onset[s], answered[s],
                    half[s], m[s, 6], m[s, 7], m[s, 8], m[s, 9], r
            }
        }' "$LIMITS" "$HALF"
}

REPORT="$REPO/bench/results-latest.md"
{
    echo "# steerdns bench: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "- command: \`$COMMAND_LINE\`"
    echo "- machine: $(nproc) CPUs, $CPU_MODEL, Linux $(uname -r)"
    echo "- load average before / after: $LOAD_BEFORE / $LOAD_AFTER (other work on the machine shows here and in the last column)"
    echo "- versions: steerdns $ver_steerdns (code), gdnsd $ver_gdnsd, Knot DNS $ver_knot, dnsperf $ver_dnsperf"
    echo "- servers pinned to CPU $SERVER_CPU, dnsperf to CPU $CLIENT_CPU, both at $SCHED_DESC; $DURATION s per run at a fixed offered rate (\`-Q\`), \`-c $CLIENTS\`, timeout $TIMEOUT s"
    if ((REPEAT > 1)); then
        echo "- every run repeated $REPEAT times (interleaved with the other servers): medians, and the range of CPU per query"
    fi
    if ((!KNOT_GEOIP)); then
        echo "- † Knot's geoip module is not installed (knot-module-geoip): Knot answers www from its zone file (fra) for every client"
    fi
    echo
    echo "Workloads:"
    for w in "${WORKLOADS[@]}"; do
        IFS='|' read -r wname _ _ transport desc <<<"$w"
        echo "- \`$wname\` ($transport): $desc"
    done
    echo
    table
    echo
    if ((SIGNED_RUN)); then
        echo "Signed beside unsigned: steerdns's zone signed with a key from \`steerdns dnssec keygen\` (ECDSA P-256 CSK; answers tailored per ECS network, signatures cached per answer shape, prepared answers carrying their RRSIGs); knot-sign is Knot $ver_knot with mod-onlinesign (ECDSA P-256, single-type signing) over the same zone with www a static A/AAAA (Knot has no geo here):"
        echo
        signed_table
        echo
        cat "$SIGN_CHECK_MD"
        echo
    fi
    if ((LIMIT)); then
        echo "Where loss begins (geo workload, offered rate raised in steps of ${LIMIT_DURATION} s through ${LIMIT_RATES[*]} qps until more than $LIMIT_LOSS_PCT% is lost), and the latency at half that rate ($DURATION s$( ((REPEAT > 1)) && echo ", medians of $REPEAT runs")):"
        echo
        limit_table
        echo
    fi
    echo "Memory after the load, counted both ways (RSS counts only touched pages of the GeoIP database; the last column adds the untouched rest):"
    echo
    cat "$MEMORY"
    echo
    echo "Response codes per run:"
    echo
    awk -F'\t' -v knot="$KNOT_LABEL" -v r="$REPEAT" '{ printf "- %s %s %s%s: %s\n", ($1 == "knot" ? knot : $1), $2, $3, (r > 1 ? " #" $15 : ""), $13 }' "$RESULTS"
    echo
    if ((MISMATCHES)); then
        echo "**WARNING: the servers differ on $MISMATCHES of ${#CHECKS[@]} sample queries ($KNOT_ONLY of them only because Knot has no geoip module), or a signed server sent no RRSIG; see the sample queries.**"
    elif ((${#CHECKS[@]})); then
        echo "All servers gave the same answers (rcode and answer records) to ${#CHECKS[@]} sample queries."
    fi
    if ((${#CHECKS[@]})); then
        echo
        echo "<details><summary>Sample queries</summary>"
        echo
        cat "$CHECK_MD"
        echo
        echo "</details>"
    fi
} >"$REPORT"

echo
cat "$REPORT"
echo
log "written to bench/results-latest.md"

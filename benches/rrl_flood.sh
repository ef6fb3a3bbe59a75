#!/usr/bin/env bash
# The effect of response rate limiting under a flood: dnsperf sends QPS queries a second for
# DURATION seconds from one address (so one client network, as a spoofed-source flood looks) to a
# release build of steerdns, and we report responses out per query in, bytes out per byte in, what
# went out whole or truncated (slipped), and the server's CPU time.
#
#   cargo build --release && benches/rrl_flood.sh            # rate 50/s, slip 2, 10,000 queries in 1 s
#   DURATION=10 benches/rrl_flood.sh                          # the same for 10 s (finer CPU figures)
#   KIND=txt benches/rrl_flood.sh                             # a 1,000-byte TXT record each time
#   KIND=nxdomain benches/rrl_flood.sh                        # a new random name each time (NXDOMAIN)
#   RATE=1000000 benches/rrl_flood.sh                         # RRL on but never limiting: its cost
#   EXTRA="--rrl off" benches/rrl_flood.sh                    # RRL off: the baseline
#
# KIND=static (the default) asks for two A records, the size of a typical service answer.
#
# Needs dnsperf and curl. Loopback only.
set -euo pipefail

KIND=${KIND:-static}
EDNS=
RATE=${RATE:-50}
SLIP=${SLIP:-2}
QPS=${QPS:-10000}
DURATION=${DURATION:-1}
EXTRA=${EXTRA:-}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/target/release/steerdns

dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
mkdir "$dir/zones"
cat >"$dir/zones/zone.yaml" <<EOF
zone: api.example.com
soa: { primary: ns1, contact: hostmaster@example.com }
nameservers: { ns1: [192.0.2.53] }
records:
  www: { A: [192.0.2.10, 192.0.2.11] }
  big: { TXT: ["$(printf '%0250d' 0)", "$(printf '%0250d' 0)", "$(printf '%0250d' 0)", "$(printf '%0250d' 0)"] }
rrl: { responses_per_second: $RATE, slip: $SLIP }
EOF
case $KIND in
static) echo "www.api.example.com A" >"$dir/queries" ;;
# With EDNS, or the 1,000-byte answer would not fit in 512 bytes and go out truncated.
txt) echo "big.api.example.com TXT" >"$dir/queries"; EDNS=-e ;;
nxdomain) awk -v n=$((QPS * DURATION)) 'BEGIN { srand(12); for (i = 0; i < n; i++)
    printf "r%08x.api.example.com A\n", int(rand() * 4294967295) }' >"$dir/queries" ;;
*) echo "KIND is static, txt or nxdomain" >&2; exit 2 ;;
esac

# shellcheck disable=SC2086
"$BIN" serve --zones "$dir/zones" --listen 127.0.0.1:0 --admin 127.0.0.1:0 \
    --geoip "$ROOT/tests/fixtures/geoip/GeoIP2-City-Test.mmdb" \
    --ready-file "$dir/ready.json" $EXTRA 2>"$dir/log" &
pid=$!
for _ in $(seq 100); do [ -s "$dir/ready.json" ] && break; sleep 0.1; done
dns=$(sed -E 's/.*"dns":"([^"]+)".*/\1/' "$dir/ready.json")
admin=$(sed -E 's/.*"admin":"([^"]+)".*/\1/' "$dir/ready.json")
port=${dns##*:}

cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
metric() { curl -s "http://$admin/metrics" | awk -v m="$1" '$1 == m {print $2}'; }

before=$(cpu)
# -q: enough queries outstanding that dropped ones (waiting out -t) never hold the sender back.
dnsperf -s 127.0.0.1 -p "$port" -d "$dir/queries" -c 1 -Q "$QPS" -l "$DURATION" \
    -q "$QPS" -t 1 $EDNS >"$dir/dnsperf" 2>&1
after=$(cpu)
ticks=$(getconf CLK_TCK)

sent=$(awk '/Queries sent:/ {print $3}' "$dir/dnsperf")
completed=$(awk '/Queries completed:/ {print $3}' "$dir/dnsperf")
dropped=$(metric steerdns_rrl_dropped_total)
slipped=$(metric steerdns_rrl_slipped_total)
answered=$(curl -s "http://$admin/metrics" |
    awk '$1 ~ /^steerdns_dns_queries_total[{]zone="api.example.com"/ { n += $2 } END { print n + 0 }')
# dnsperf: "Average packet size: request 37, response 53"
request_bytes=$(awk '/Average packet size/ { gsub(",", ""); print $5 }' "$dir/dnsperf")
response_bytes=$(awk '/Average packet size/ { print $7 }' "$dir/dnsperf")
echo "$KIND; rate ${RATE}/s, slip ${SLIP}; ${QPS} queries/s for ${DURATION}s ${EXTRA:+($EXTRA)}"
echo "  queries sent (dnsperf):        $sent"
echo "  queries answered (server):     ${answered:-0}"
echo "  responses received (dnsperf):  $completed"
echo "    of which slipped (TC=1):     ${slipped:-0}"
echo "    of which whole:              $((completed - ${slipped:-0}))"
echo "  responses dropped (server):    ${dropped:-0}"
awk -v c="$completed" -v s="$sent" 'BEGIN { printf "  responses out per query in:    %.4f\n", c / s }'
awk -v c="$completed" -v s="$sent" -v q="${request_bytes:-0}" -v r="${response_bytes:-0}" \
    'BEGIN { printf "  bytes out per byte in:         %.4f (%d B queries, %d B responses on average)\n",
             c * r / (s * q), q, r }'
awk -v t=$((after - before)) -v hz="$ticks" -v s="$sent" \
    'BEGIN { printf "  server CPU:                    %.0f ms (%.1f us per query)\n", t * 1000 / hz, t * 1e6 / hz / s }'

#!/usr/bin/env bash
# Instructions per warm query in `Handler::respond_with` (issue 15): signed geo answers (DO=1,
# ECS from many networks, the example zone signed) beside unsigned ones, counted by callgrind,
# which a loaded machine cannot spoil. For each case, respond_loop runs twice under callgrind
# with WARM=3 (every network answered three times first: a prepared answer is kept per place and
# rotation step, and one pass does not meet every step): with COUNT queries and with 0; the
# difference over COUNT is the cost of a warm query, without the warm-up's misses, GeoIP first
# sightings and signatures made. Prints one table (markdown); the prepared answers' hits and
# misses of each counted run go to stderr (0 misses when warm).
#
#   bash bench/instructions-signed.sh            # NETWORKS=4000 COUNT=40000
#   NETWORKS=24 COUNT=20000 bash bench/instructions-signed.sh
set -euo pipefail
cd "$(dirname "$0")/.."
NETWORKS=${NETWORKS:-4000}
COUNT=${COUNT:-40000}
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 2; }
CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2} cargo build --release --locked --example respond_loop >&2
bin=target/release/examples/respond_loop
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Total instructions (Ir) callgrind collected inside respond_with for one run.
instructions() { # kind count env...
    local kind=$1 count=$2 out="$tmp/cg.$RANDOM"
    shift 2
    env "$@" WARM=3 valgrind --tool=callgrind --callgrind-out-file="$out" \
        --toggle-collect='*Handler::respond_with*' "$bin" "$kind" "$count" 2>/dev/null |
        sed "s/^/$* /" >&2
    awk '/^(summary|totals):/ { print $2; exit }' "$out"
}

per_query() { # kind env...
    local kind=$1
    shift
    local with without
    with=$(instructions "$kind" "$COUNT" "$@")
    without=$(instructions "$kind" 0 "$@")
    echo $(((with - without) / COUNT))
}

echo "| query (warm, ${NETWORKS} ECS networks for geo) | unsigned (DO=0) | signed ECDSA P-256 (DO=1) | signed / unsigned | signed Ed25519 (DO=1) | signed / unsigned |"
echo "|---|---:|---:|---:|---:|---:|"
for kind in geo static nxdomain; do
    u=$(per_query "$kind" NETWORKS="$NETWORKS" SIGNED=0)
    e=$(per_query "$kind" NETWORKS="$NETWORKS" SIGNED=1)
    d=$(per_query "$kind" NETWORKS="$NETWORKS" SIGNED=ed25519)
    printf '| %s | %s | %s | %s× | %s | %s× |\n' "$kind" "$u" "$e" \
        "$(awk -v a="$e" -v b="$u" 'BEGIN { printf "%.2f", a / b }')" "$d" \
        "$(awk -v a="$d" -v b="$u" 'BEGIN { printf "%.2f", a / b }')"
done
echo
echo "(prepared answers off, PREPARED=0, for comparison: every query answered, signed and encoded)"
u=$(per_query geo NETWORKS="$NETWORKS" SIGNED=0 PREPARED=0)
e=$(per_query geo NETWORKS="$NETWORKS" SIGNED=1 PREPARED=0)
printf '| geo, no prepared answers | %s | %s | %s× |\n' "$u" "$e" \
    "$(awk -v a="$e" -v b="$u" 'BEGIN { printf "%.2f", a / b }')"

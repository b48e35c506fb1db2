#!/bin/sh
# Draws decode tokens/s against context length, with the tail skip and dense, from alibi_bench's
# JSON output:
#   ./build/release/bench/alibi_bench --benchmark_filter='^decode/' --benchmark_out=decode.json
#   bench/plot_decode.sh decode.json docs/decode.png
# The x axis ends at the data; the title names the machine (see bench/machine.awk).
# Needs gnuplot (Debian: gnuplot-nox) and awk.
set -eu
json=$1
png=${2:-decode.png}
data=$(mktemp -d)
trap 'rm -rf "$data"' EXIT

# Per setting, context length and tokens/s.
awk -f "$(dirname "$0")/benchmarks.awk" "$json" | awk -v dir="$data" '
  $1 ~ /^decode\// {
    context = $1; sub(/.*context:/, "", context); sub(/\/.*/, "", context)
    skip = $1; sub(/.*skip:/, "", skip); sub(/\/.*/, "", skip)
    print context, $4 >> (dir "/skip_" skip ".dat")
  }'
for f in "$data"/*.dat; do sort -n "$f" -o "$f"; done
machine=$(awk -f "$(dirname "$0")/machine.awk" "$json")

gnuplot <<GNUPLOT
set terminal pngcairo size 800,480 font ",11" noenhanced
set output "$png"
set title "Decode, Hq = 32, Hkv = 8, D = 128, float cache, slopes(32), 2 threads\n$machine"
set logscale xy
set autoscale xfix
set xlabel "context length (tokens)"
set ylabel "tokens/s"
set grid
set key bottom left
plot "$data/skip_1.dat" using 1:2 with linespoints lw 2 title "alibi, tail skip (default)", \
     "$data/skip_0.dat" using 1:2 with linespoints lw 2 title "alibi, tail_tolerance = 0 (dense)"
GNUPLOT
echo "wrote $png"

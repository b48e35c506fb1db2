#!/bin/sh
# Draws prefill time and GFLOP/s against S, fused against the materialised Eigen attention, from
# alibi_bench's JSON output:
#   ./build/release/bench/alibi_bench --benchmark_filter='^(fused|materialised_eigen)/float/' \
#       --benchmark_out=prefill.json
#   bench/plot.sh prefill.json docs/prefill.png
# Needs gnuplot (Debian: gnuplot-nox) and awk.
set -eu
json=$1
png=${2:-prefill.png}
data=$(mktemp -d)
trap 'rm -rf "$data"' EXIT

# One line per benchmark object: name, real time (ms), GFLOP/s. Repeated runs keep the median.
awk -v dir="$data" '
  /"name":/ { name = $0; sub(/.*"name": "/, "", name); sub(/".*/, "", name); aggregate = "" }
  /"aggregate_name":/ { aggregate = $0; sub(/.*"aggregate_name": "/, "", aggregate); sub(/".*/, "", aggregate) }
  /"real_time":/ { time = $2; sub(/,/, "", time) }
  /"GFLOP\/s":/ { gflops = $2; sub(/,/, "", gflops) }
  /^ *}/ {
    if (name != "" && (aggregate == "" || aggregate == "median") &&
        match(name, /^(fused|materialised_eigen)\/float\/S:[0-9]+\/H:8\/Hkv:8\/D:64\/causal:1\/threads:[12]/)) {
      kernel = name; sub(/\/.*/, "", kernel)
      s = name; sub(/.*\/S:/, "", s); sub(/\/.*/, "", s)
      threads = name; sub(/.*threads:/, "", threads); sub(/\/.*/, "", threads)
      print s, time, gflops >> (dir "/" kernel "_" threads ".dat")
    }
    name = ""
  }' "$json"
for f in "$data"/*.dat; do sort -n "$f" -o "$f"; done

gnuplot <<GNUPLOT
set terminal pngcairo size 1200,480 font ",11"
set output "$png"
set multiplot layout 1,2 title "Causal ALiBi attention, B = 1, H = 8, D = 64, float"
set logscale x 2
set xlabel "sequence length S"
set key top left
set grid
set logscale y
set ylabel "time per call (ms)"
plot "$data/fused_1.dat" using 1:2 with linespoints lw 2 title "alibi fused, 1 thread", \
     "$data/fused_2.dat" using 1:2 with linespoints lw 2 title "alibi fused, 2 threads", \
     "$data/materialised_eigen_1.dat" using 1:2 with linespoints lw 2 title "materialised Eigen, 1 thread", \
     "$data/materialised_eigen_2.dat" using 1:2 with linespoints lw 2 title "materialised Eigen, 2 threads"
unset logscale y
set key right center
set ylabel "GFLOP/s (2 S^2 D H per call)"
set yrange [0:*]
plot "$data/fused_1.dat" using 1:3 with linespoints lw 2 title "alibi fused, 1 thread", \
     "$data/fused_2.dat" using 1:3 with linespoints lw 2 title "alibi fused, 2 threads", \
     "$data/materialised_eigen_1.dat" using 1:3 with linespoints lw 2 title "materialised Eigen, 1 thread", \
     "$data/materialised_eigen_2.dat" using 1:3 with linespoints lw 2 title "materialised Eigen, 2 threads"
unset multiplot
GNUPLOT
echo "wrote $png"

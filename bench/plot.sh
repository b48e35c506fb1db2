#!/bin/sh
# Draws prefill time and GFLOP/s against S, fused against the materialised Eigen attention, from
# alibi_bench's JSON output:
#   ./build/release/bench/alibi_bench \
#       --benchmark_filter='^(ceiling/(fma_peak|eigen_gemm)|(fused|materialised_eigen)/float/)' \
#       --benchmark_out=prefill.json
#   bench/plot.sh prefill.json docs/prefill.png
# The ceilings, when the JSON has them, are drawn as lines; the title names the machine (the
# build line alibi_bench stores in the JSON's context, and its CPU count).
# Needs gnuplot (Debian: gnuplot-nox) and awk.
set -eu
json=$1
png=${2:-prefill.png}
data=$(mktemp -d)
trap 'rm -rf "$data"' EXIT

# Per kernel and thread count, the S sweep: S, real time (ms), GFLOP/s.
awk -f "$(dirname "$0")/benchmarks.awk" "$json" | awk -v dir="$data" '
  $1 ~ /^(fused|materialised_eigen)\/float\/S:[0-9]+\/H:8\/Hkv:8\/D:64\/causal:1\/threads:[12]\// {
    kernel = $1; sub(/\/.*/, "", kernel)
    s = $1; sub(/.*\/S:/, "", s); sub(/\/.*/, "", s)
    threads = $1; sub(/.*threads:/, "", threads); sub(/\/.*/, "", threads)
    print s, $2, $3 >> (dir "/" kernel "_" threads ".dat")
  }'
for f in "$data"/*.dat; do sort -n "$f" -o "$f"; done
# The ceilings' GFLOP/s at 1 thread, or empty.
ceiling() {
  awk -f "$(dirname "$0")/benchmarks.awk" "$json" | awk -v name="$1" '$1 ~ name { print $3; exit }'
}
fma_peak=$(ceiling '^ceiling/fma_peak/threads:1')
gemm=$(ceiling '^ceiling/eigen_gemm_1024/threads:1')
machine=$(awk -f "$(dirname "$0")/machine.awk" "$json")
ceilings=""
[ -n "$fma_peak" ] && ceilings="$ceilings, $fma_peak with lines dt 2 lc rgb 'black' title 'FMA peak, 1 thread'"
[ -n "$gemm" ] && ceilings="$ceilings, $gemm with lines dt 3 lc rgb 'gray40' title 'Eigen sgemm 1024^3, 1 thread'"

gnuplot <<GNUPLOT
set terminal pngcairo size 1200,480 font ",11"
set output "$png"
set multiplot layout 1,2 title "Causal ALiBi attention, B = 1, H = 8, D = 64, float\n$machine" noenhanced
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
     "$data/materialised_eigen_2.dat" using 1:3 with linespoints lw 2 title "materialised Eigen, 2 threads"$ceilings
unset multiplot
GNUPLOT
echo "wrote $png"

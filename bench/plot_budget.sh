#!/bin/sh
# Draws memory held and error against full attention, per context length, for the full f32 cache,
# StreamingLLM at the budget's memory and the budgeted cache, from alibi_bench's JSON output:
#   ./build/release/bench/alibi_bench --benchmark_filter='budget/certificate/.*int8:0/' \
#       --benchmark_out=budget.json
#   bench/plot_budget.sh budget.json docs/budget_memory.png
# The full cache's memory is the bench's full_f32_MiB (tokens x Hkv x (D + Dv) x 4 bytes: no
# full cache is built). Ours is drawn at 2 x certificate x max|v|, the most eviction could have
# changed (its measured change in float64 is 0, which a log axis cannot show).
# Needs gnuplot (Debian: gnuplot-nox) and awk.
set -eu
json=$1
png=${2:-budget_memory.png}
data=$(mktemp -d)
trap 'rm -rf "$data"' EXIT

# Per context: full MiB, budgeted peak MiB, StreamingLLM MiB, its change, our limit, kernel error.
awk '
  function counter(line) { sub(/.*: /, "", line); sub(/,/, "", line); return line }
  /"name": "budget\/certificate\/.*int8:0\// {
    tokens = $0; sub(/.*tokens:/, "", tokens); sub(/\/.*/, "", tokens); on = 1
  }
  on && /"full_f32_MiB":/ { full = counter($0) }
  on && /"budget_MiB":/ { budget = counter($0) }
  on && /"peak_of_budget":/ { peak = counter($0) }
  on && /"streaming_change":/ { streaming = counter($0) }
  on && /"2_bound_maxv":/ { limit = counter($0) }
  on && /"kernel_error":/ { kernel = counter($0) }
  on && /^ *}/ { print tokens, full, budget * peak, budget, streaming, limit, kernel; on = 0 }
' "$json" | sort -n > "$data/budget.dat"
machine=$(awk -f "$(dirname "$0")/machine.awk" "$json")

gnuplot <<GNUPLOT
set terminal pngcairo size 1000,440 font ",11" noenhanced
set output "$png"
set multiplot layout 1,2 title "Budgeted cache at 64 MiB, Hq = Hkv = 32, D = 64, slopes(32), f32\n$machine"
set logscale xy
set xlabel "context length (tokens)"
set grid
set key top left
set xrange [12000:350000]
set xtics ("16k" 16384, "64k" 65536, "256k" 262144)
set ylabel "memory held (MiB)"
set yrange [32:8192]
plot "$data/budget.dat" using 1:2 with linespoints lw 2 title "full cache", \
     "" using 1:4 with linespoints lw 2 dt 2 title "StreamingLLM (4 sinks + window), same memory", \
     "" using 1:3 with linespoints lw 2 title "budgeted (peak)"
set ylabel "max |out - full attention|"
set yrange [*:*]
set format y "%.0e"
set key center right
plot "$data/budget.dat" using 1:5 with linespoints lw 2 title "StreamingLLM: eviction's change", \
     "" using 1:6 with linespoints lw 2 title "budgeted: 2 x certificate x max|v|", \
     "" using 1:7 with linespoints lw 2 dt 3 title "budgeted, float kernel end to end"
unset multiplot
GNUPLOT
echo "wrote $png"

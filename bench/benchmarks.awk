# Flattens alibi_bench's JSON output (--benchmark_out) into one line per benchmark:
#   name real_time GFLOP/s tokens/s
# (a counter the case lacks is "-"). Repeated runs keep only their median. Used by the plot
# scripts: awk -f bench/benchmarks.awk results.json
/"name":/ {
  name = $0; sub(/.*"name": "/, "", name); sub(/".*/, "", name)
  aggregate = ""; time = "-"; gflops = "-"; rate = "-"
}
/"aggregate_name":/ { aggregate = $0; sub(/.*"aggregate_name": "/, "", aggregate); sub(/".*/, "", aggregate) }
/"real_time":/ { time = $2; sub(/,/, "", time) }
/"GFLOP\/s":/ { gflops = $2; sub(/,/, "", gflops) }
/"tokens\/s":/ { rate = $2; sub(/,/, "", rate) }
/^ *}/ {
  if (name != "" && (aggregate == "" || aggregate == "median")) print name, time, gflops, rate
  name = ""
}

# The machine a JSON of alibi_bench (--benchmark_out) was measured on, for plot titles: its CPU
# count and the build line alibi_bench stores in the context ("alibi_build", alibi::build_info()
# up to the compiler). awk -f bench/machine.awk results.json
/"num_cpus":/ { cpus = $2; sub(/,/, "", cpus) }
/"alibi_build":/ {
  build = $0; sub(/.*"alibi_build": "/, "", build); sub(/".*/, "", build)
  sub(/^alibi [0-9.]*: /, "", build); sub(/, micro-tile.*/, "", build)
}
END {
  line = cpus " CPUs"
  if (build != "") line = line ", " build
  print line
}

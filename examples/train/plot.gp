# Perplexity against evaluation length per position scheme, from train_short_test_long --csv:
#   ./build/release/examples/alibi_train_short_test_long --csv extrapolation.csv
#   gnuplot -e "csv='extrapolation.csv'; png='docs/extrapolation.png'; floor=2.675" \
#     examples/train/plot.gp
# The dashed vertical line is the training length (read from the CSV); `floor`, when given, is
# drawn as the perplexity floor (the synthetic language's, which the run prints); `title` too.
if (!exists("csv")) csv = 'extrapolation.csv'
if (!exists("png")) png = 'extrapolation.png'
if (!exists("title")) title = "Train short, test long: held-out perplexity against evaluation length"
set terminal pngcairo size 800,500 font ",11"
set output png
set datafile separator ","
stats "< awk -F, 'NR > 1' ".csv using 2:3 nooutput
L = STATS_min_x
set title title noenhanced
set logscale xy
set xrange [L / 1.3 : STATS_max_y * 1.3]
set xlabel "evaluation length (tokens)"
set ylabel "perplexity"
set grid
set key top left noenhanced
set arrow from L, graph 0 to L, graph 1 nohead dt 2 lc rgb "gray30"
set label sprintf("trained at L = %d", L) at L, graph 1 offset 0, 0.6 center
if (exists("floor")) \
  set arrow from graph 0, first floor to graph 1, first floor nohead dt 3 lw 2 lc rgb "black"; \
  set label sprintf("floor %.3f", floor) at graph 0.98, first floor offset 0, 0.7 right
plot for [s in "alibi alibi_learned rotary sinusoidal nope"] \
     "< awk -F, -v s=".s." '$1 == s' ".csv using 3:5 with linespoints lw 2 title s

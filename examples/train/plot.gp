# Perplexity against evaluation length per position scheme, from train_short_test_long --csv:
#   ./build/release/examples/alibi_train_short_test_long --csv extrapolation.csv
#   gnuplot -e "csv='extrapolation.csv'; png='docs/extrapolation.png'" examples/train/plot.gp
if (!exists("csv")) csv = 'extrapolation.csv'
if (!exists("png")) png = 'extrapolation.png'
set terminal pngcairo size 800,500 font ",11"
set output png
set datafile separator ","
set title "Train short (L = 64), test long: perplexity against evaluation length"
set logscale xy
set xlabel "evaluation length (tokens)"
set ylabel "perplexity"
set grid
set key top left noenhanced
set xrange [48:1400]
plot for [s in "alibi alibi_learned nope sinusoidal"] \
     "< awk -F, -v s=".s." '$1 == s' ".csv using 3:5 with linespoints lw 2 title s

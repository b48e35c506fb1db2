// Train short, test long (Press et al., ICLR 2022), small but real: the same small transformer
// trained at length L with four position schemes (ALiBi, ALiBi with learned slopes, sinusoidal
// absolute embeddings, none), then evaluated at L, 2L, 4L, 8L and 16L. ALiBi's perplexity should
// stay flat beyond the training length while the sinusoidal model's grows.
//
//   train_short_test_long [--quick] [--seed N] [--text FILE] [--csv PATH] [--train-len L]
//                         [--steps N] [--check]
//
// --quick: a short run (what ctest runs, with --check); --text: train on any byte corpus instead
// of the built-in synthetic language; --csv: rows scheme,train_len,eval_len,loss,ppl for
// examples/train/plot.gp; --check: exit 1 unless the results show extrapolation (ALiBi at 16L
// within 5% of L, sinusoidal at 4L at least 1.3x L, ALiBi best at 16L).
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "train/experiment.hpp"

namespace {

struct Options {
  bool quick = false, check = false;
  unsigned seed = 1;
  std::string text, csv;
  long train_len = 64, steps = 0;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const auto value = [&] {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return std::string(argv[++i]);
    };
    if (a == "--quick")
      o.quick = true;
    else if (a == "--check")
      o.check = true;
    else if (a == "--seed")
      o.seed = unsigned(std::stoul(value()));
    else if (a == "--text")
      o.text = value();
    else if (a == "--csv")
      o.csv = value();
    else if (a == "--train-len")
      o.train_len = std::stol(value());
    else if (a == "--steps")
      o.steps = std::stol(value());
    else {
      std::fprintf(stderr, "unknown argument %s (see the comment at the top of the source)\n",
                   a.c_str());
      std::exit(2);
    }
  }
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  const train::Language language =
      o.text.empty() ? train::Language(32, o.seed) : train::Language(o.text);
  const long L = o.train_len, batch = 16;
  const long steps = o.steps > 0 ? o.steps : o.quick ? 250 : 1200;
  const long eval_tokens = o.quick ? 8192 : 32768;
  std::printf("train at L = %ld for %ld steps of %ld x %ld tokens; vocabulary %d\n", L, steps,
              batch, L, language.vocab());
  if (language.synthetic())
    std::printf(
        "synthetic order-2 Markov language: entropy rate %.4f nats = perplexity floor "
        "%.3f\n",
        language.entropy_rate(), std::exp(language.entropy_rate()));

  const auto losses = train::extrapolation(language, L, steps, eval_tokens, o.seed, true);
  const long multiples[] = {1, 2, 4, 8, 16};
  std::printf("\nperplexity by evaluation length (trained at L = %ld)\n%-14s", L, "scheme");
  for (const long m : multiples) std::printf(" %9s", (std::to_string(m * L)).c_str());
  std::printf("   16L / L\n");
  std::ofstream csv;
  if (!o.csv.empty()) {
    csv.open(o.csv);
    csv << "scheme,train_len,eval_len,loss,ppl\n";
  }
  for (const train::Positions scheme : train::schemes) {
    const std::vector<double>& l = losses.at(train::name(scheme));
    std::printf("%-14s", train::name(scheme));
    for (std::size_t i = 0; i < l.size(); ++i) {
      std::printf(" %9.3f", std::exp(l[i]));
      if (csv)
        csv << train::name(scheme) << ',' << L << ',' << multiples[i] * L << ',' << l[i] << ','
            << std::exp(l[i]) << '\n';
    }
    std::printf("   %6.3f\n", std::exp(l.back() - l.front()));
  }
  if (!o.check) return 0;
  const auto ppl = [&](const char* s, int i) { return std::exp(losses.at(s)[std::size_t(i)]); };
  const bool flat = ppl("alibi", 4) <= 1.05 * ppl("alibi", 0);
  const bool sinusoidal_breaks = ppl("sinusoidal", 2) >= 1.3 * ppl("sinusoidal", 0);
  const bool alibi_best =
      ppl("alibi", 4) < ppl("sinusoidal", 4) && ppl("alibi", 4) < ppl("nope", 4);
  std::printf("\ncheck: alibi flat %s, sinusoidal grows %s, alibi best at 16L %s\n",
              flat ? "yes" : "NO", sinusoidal_breaks ? "yes" : "NO", alibi_best ? "yes" : "NO");
  return flat && sinusoidal_breaks && alibi_best ? 0 : 1;
}

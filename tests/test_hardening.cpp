// Defects a close review and a fuzzer found (issue 14), each pinned by a test that failed before
// its fix: the tail bound's reads and margins, empty rows next to NaN, the reference's slope
// gradient at far positions, and the default tolerance in double.
#include "test_support.hpp"

#include <sys/mman.h>
#include <unistd.h>
#include <atomic>
#include <new>
#include <stdexcept>

#include <catch2/catch.hpp>

using namespace alibi_test;

namespace {

/// Memory whose last page is unmapped (PROT_NONE): any read past `usable` floats faults.
class GuardedBuffer {
 public:
  explicit GuardedBuffer(std::size_t floats) {
    const std::size_t page = std::size_t(sysconf(_SC_PAGESIZE));
    usable_bytes_ = (floats * sizeof(float) + page - 1) / page * page;
    bytes_ = usable_bytes_ + page;
    base_ = mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(base_ != MAP_FAILED);
    REQUIRE(mprotect(static_cast<char*>(base_) + usable_bytes_, page, PROT_NONE) == 0);
  }
  ~GuardedBuffer() { munmap(base_, bytes_); }
  GuardedBuffer(const GuardedBuffer&) = delete;
  GuardedBuffer& operator=(const GuardedBuffer&) = delete;
  /// `floats` floats that end exactly at the guard page.
  float* tail(std::size_t floats) const {
    return reinterpret_cast<float*>(static_cast<char*>(base_) + usable_bytes_) - floats;
  }

 private:
  void* base_ = nullptr;
  std::size_t bytes_ = 0, usable_bytes_ = 0;
};

double max_abs_diff(const std::vector<float>& a, const std::vector<double>& b) {
  double worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::fabs(a[i] - b[i]));
  return worst;
}

}  // namespace

TEST_CASE("keys past seqlens_k are never read, even by the tail bound's norms",
          "[hardening][tail]") {
  // k and v of [1, Sk, 1, D] end at an unmapped page; seqlens_k = 1000 < Sk = 2000, and every
  // key past it would sit on that page (k and v are placed so that key 1000 starts it). Before:
  // the norm measurement read all Sk keys (SIGSEGV).
  const index_t Sk = 2000, valid = 1000, D = 16;
  GuardedBuffer kb(std::size_t(valid * D)), vb(std::size_t(valid * D));
  float* k = kb.tail(std::size_t(valid * D));
  float* v = vb.tail(std::size_t(valid * D));
  const auto kr = random_values<float>(std::size_t(valid * D), 301);
  const auto vr = random_values<float>(std::size_t(valid * D), 302);
  std::copy(kr.begin(), kr.end(), k);
  std::copy(vr.begin(), vr.end(), v);
  const Shape s{1, 4, Sk, 1, 1, D, D};
  const auto q = random_values<float>(s.q_size(), 303);
  for (const bool causal : {true, false}) {
    INFO("causal " << causal);
    alibi::Params p;
    p.causal = causal;
    p.slopes = {0.5f};
    p.seqlens_k = {valid};
    alibi::AttentionStats stats;
    p.stats = &stats;
    std::vector<float> out(s.out_size()), lse(s.lse_size());
    alibi::attention(q_view(s, q.data()), k_view<const float>(s, k), v_view<const float>(s, v),
                     out_view(s, out.data()), p, lse.data());
    // The oracle over the valid keys only, as a call of Sk = valid.
    Shape shorter = s;
    shorter.seq_k = valid;
    alibi::Params po = p;
    po.seqlens_k.clear();
    po.stats = nullptr;
    const std::vector<float> kv(k, k + valid * D), vv(v, v + valid * D);
    const Expected e = oracle(shorter, q, kv, vv, po);
    CHECK(max_abs_diff(out, e.out) < 1e-6);
    CHECK(stats.keys_visited < stats.keys_allowed);  // the skip did run
  }
}

TEST_CASE("bidirectional calls with seqlens_k keep the skip, whatever the tail holds",
          "[hardening][tail]") {
  // Before: the norms were measured over all Sk keys, so NaN (or anything large) in the unused
  // tail disabled the skip: every allowed key was visited.
  const Shape s{2, 8, 3000, 2, 2, 16, 16};
  auto k = random_values<float>(s.k_size(), 311);
  const auto v = random_values<float>(s.v_size(), 312);
  const auto q = random_values<float>(s.q_size(), 313);
  alibi::Params p;
  p.causal = false;
  p.slopes = {0.5f, 0.25f};
  p.seqlens_k = {2200, 2900};
  p.query_offset = 1000;  // keys on both sides of the queries
  for (index_t b = 0; b < s.batch; ++b)
    for (index_t t = p.seqlens_k[std::size_t(b)]; t < s.seq_k; ++t)
      for (index_t i = 0; i < s.heads_kv * s.head_dim; ++i)
        k[std::size_t((b * s.seq_k + t) * s.heads_kv * s.head_dim + i)] = std::nanf("");
  alibi::AttentionStats stats;
  p.stats = &stats;
  std::vector<float> out(s.out_size());
  alibi::attention(q_view(s, q.data()), k_view(s, k.data()), v_view(s, v.data()),
                   out_view(s, out.data()), p);
  INFO("visited " << stats.keys_visited << " of " << stats.keys_allowed);
  CHECK(stats.keys_visited < stats.keys_allowed / 4);
  p.stats = nullptr;
  CHECK(max_abs_diff(out, oracle(s, q, k, v, p).out) < 1e-6);
}

TEST_CASE("the default tolerance is double round-off for double", "[hardening][tail]") {
  // S = 2048, H = 4, D = 32 (the review's case): before, the float default 2^-24 made double
  // results float-accurate (2.3e-11 away from tolerance 0).
  const Shape s{1, 64, 2048, 4, 4, 32, 32};
  const auto q = random_values<double>(s.q_size(), 321);
  const auto k = random_values<double>(s.k_size(), 322);
  const auto v = random_values<double>(s.v_size(), 323);
  alibi::Params p;
  alibi::AttentionStats stats;
  p.stats = &stats;
  std::vector<double> out(s.out_size());
  alibi::attention(q_view(s, q.data()), k_view(s, k.data()), v_view(s, v.data()),
                   out_view(s, out.data()), p);
  p.stats = nullptr;
  const Expected e = oracle(s, q, k, v, p);
  double worst = 0;
  for (std::size_t i = 0; i < out.size(); ++i)
    worst = std::max(worst, std::fabs(out[i] - e.out[i]));
  CHECK(worst < 1e-13);
  CHECK(stats.keys_visited < stats.keys_allowed);  // and it still skips
}

TEST_CASE("the tail bound's margin covers the float error of a dot product at any head_dim",
          "[hardening][tail]") {
  // A computed logit exceeds the exact one by up to gamma_D |q| |k| (D roundings of the sum),
  // gamma_D = D u / (1 - D u). Before, the margin was a fixed 1e-5, below gamma_D from D = 168.
  const double u = 0x1p-24;
  for (const alibi::index_t D : {16, 128, 168, 256, 1024}) {
    INFO("D " << D);
    const double gamma = double(D) * u / (1 - double(D) * u);
    const double qk = 1000, slope = 0.5, max = 0;
    const alibi::index_t distance = 1500;
    const double worst_logit = qk * (1 + gamma) - slope * double(distance) - max;
    const double exact_tail = std::exp(worst_logit) / -std::expm1(-slope);
    const auto round_off = alibi::detail::LogitRoundOff::of(u, D);
    CHECK(alibi::detail::tail_weight(std::sqrt(qk), std::sqrt(qk), slope, distance, max,
                                     round_off) >= exact_tail);
  }
}

TEST_CASE("the skip stays within its bound at head_dim 256", "[hardening][tail]") {
  const Shape s{1, 4, 1500, 2, 2, 256, 16};
  const auto q = random_values<float>(s.q_size(), 331, 0.5f);
  const auto k = random_values<float>(s.k_size(), 332, 0.5f);
  const auto v = random_values<float>(s.v_size(), 333);
  alibi::Params p;
  p.slopes = {0.5f, 0.25f};
  std::vector<float> out(s.out_size());
  alibi::attention(q_view(s, q.data()), k_view(s, k.data()), v_view(s, v.data()),
                   out_view(s, out.data()), p);
  CHECK(max_abs_diff(out, oracle(s, q, k, v, p).out) < 1e-6);
}

TEST_CASE("a row with no allowed key is 0 and -inf even next to a NaN value", "[hardening][nan]") {
  // Sq = 4, Sk = 2, causal: rows 0 and 1 attend nothing, rows 2 and 3 attend v[0] = NaN. Before,
  // 0 x NaN in the shared P V tile made rows 0 and 1 NaN too.
  const Shape s{1, 4, 2, 1, 1, 8, 8};
  const auto q = random_values<float>(s.q_size(), 341);
  const auto k = random_values<float>(s.k_size(), 342);
  auto v = random_values<float>(s.v_size(), 343);
  v[0] = std::nanf("");
  std::vector<float> out(s.out_size()), lse(s.lse_size());
  alibi::attention(q_view(s, q.data()), k_view(s, k.data()), v_view(s, v.data()),
                   out_view(s, out.data()), alibi::Params{}, lse.data());
  for (index_t i = 0; i < 2; ++i) {
    for (index_t d = 0; d < 8; ++d) CHECK(out[std::size_t(i * 8 + d)] == 0.0f);
    CHECK(lse[std::size_t(i)] == -std::numeric_limits<float>::infinity());
  }
  CHECK(std::isnan(out[2 * 8]));  // the NaN itself propagates where it is attended
}

TEST_CASE("empty rows stay 0 with negative slopes and offsets near 5.8e17", "[hardening][nan]") {
  // The fuzzer's case: B 3, Sq 29, Sk 10, Hq = Hkv = 2, D 8, causal, tail_tolerance 0, slopes
  // {1/16, -1/2}, the keys far after most queries (those rows are empty).
  const Shape s{3, 29, 10, 2, 2, 8, 8};
  const auto q = random_values<float>(s.q_size(), 351);
  const auto k = random_values<float>(s.k_size(), 352);
  const auto v = random_values<float>(s.v_size(), 353);
  alibi::Params p;
  p.tail_tolerance = 0;
  p.slopes = {0.0625f, -0.5f};
  p.key_offset = index_t(1) << 59;  // 5.76e17, the largest accepted
  p.query_offset = (index_t(1) << 59) - 20;
  std::vector<float> out(s.out_size()), lse(s.lse_size());
  alibi::attention(q_view(s, q.data()), k_view(s, k.data()), v_view(s, v.data()),
                   out_view(s, out.data()), p, lse.data());
  const Expected e = oracle(s, q, k, v, p);
  for (std::size_t i = 0; i < out.size(); ++i) {
    INFO("element " << i);
    REQUIRE(std::isfinite(out[i]));
    REQUIRE(std::fabs(out[i] - e.out[i]) < 1e-5);
  }
  for (std::size_t i = 0; i < lse.size(); ++i) {
    if (std::isinf(e.lse[i]))
      REQUIRE(lse[i] == -std::numeric_limits<float>::infinity());
    else
      REQUIRE(lse[i] == Approx(e.lse[i]).epsilon(1e-6));
  }
}

namespace {

/// dslopes of the reference and of the fused backward, with every key g positions further from
/// every query (bidirectional, all keys before the queries).
template <class T>
std::pair<std::vector<float>, std::vector<float>> slope_grads(double gap) {
  const Shape s{1, 13, 79, 2, 2, 8, 8};
  const auto q = random_values<T>(s.q_size(), 361), k = random_values<T>(s.k_size(), 362),
             v = random_values<T>(s.v_size(), 363), dout = random_values<T>(s.out_size(), 364);
  alibi::Params p;
  p.causal = false;
  p.slopes = {0.5f, 0.0625f};
  p.query_offset = s.seq_k + index_t(gap);
  std::vector<T> out(s.out_size());
  std::vector<float> lse(s.lse_size());
  const alibi::TensorView<const T> qv = q_view(s, q.data()), kv = k_view(s, k.data()),
                                   vv = v_view(s, v.data());
  alibi::attention(qv, kv, vv, out_view(s, out.data()), p, lse.data());
  std::vector<T> dq(q.size()), dk(k.size()), dv(v.size());
  std::vector<float> fused(2), ref(2);
  const alibi::TensorView<const T> ov = out_view(s, out.data()), gv = out_view(s, dout.data());
  alibi::attention_backward(qv, kv, vv, ov, gv, lse.data(), q_view(s, dq.data()),
                            k_view(s, dk.data()), v_view(s, dv.data()), p, fused.data());
  alibi::reference::attention_backward(qv, kv, vv, ov, gv, lse.data(), q_view(s, dq.data()),
                                       k_view(s, dk.data()), v_view(s, dv.data()), p, ref.data());
  return {fused, ref};
}

}  // namespace

TEST_CASE("slope gradients are invariant under a shift of every distance",
          "[hardening][backward]") {
  // Shifting all distances by g adds -m g to every logit of a row (the softmax is unchanged) and
  // -g sum dS = 0 to dL/dm. Before: the reference gave 7.647 at g = 1e9 and -1.68e6 at 1e12
  // (against 10.539), the fused float backward 11.52 at 1e6 and 905 at 1e9.
  const auto base_d = slope_grads<double>(0);
  const auto base_f = slope_grads<float>(0);
  for (std::size_t j = 0; j < 2; ++j) {
    CHECK(base_d.first[j] == Approx(base_d.second[j]).epsilon(1e-6));
    CHECK(base_f.first[j] == Approx(base_d.second[j]).epsilon(1e-4));
  }
  for (const double gap : {1e3, 1e6, 1e9, 1e12}) {
    INFO("gap " << gap);
    const auto d = slope_grads<double>(gap);
    const auto f = slope_grads<float>(gap);
    for (std::size_t j = 0; j < 2; ++j) {
      CHECK(d.second[j] == Approx(base_d.second[j]).epsilon(1e-6));  // the reference
      CHECK(d.first[j] == Approx(base_d.second[j]).epsilon(1e-6));   // fused, double
      CHECK(f.first[j] == Approx(base_d.second[j]).epsilon(1e-3));   // fused, float
    }
  }
}

TEST_CASE("split decode is exact with the query 1e9 to 1e12 positions past its keys",
          "[hardening][long][merge]") {
  // 20000 keys split into chunks of 16384 merged by lse. Shifting every distance by the same gap
  // leaves the softmax unchanged, so the output must equal the gap-0 output. Before: chunks merged
  // through a float lse, 0.025 off at 1e12.
  const Shape s{1, 1, 20000, 2, 1, 16, 16};
  const auto q = random_values<float>(s.q_size(), 371), k = random_values<float>(s.k_size(), 372),
             v = random_values<float>(s.v_size(), 373);
  alibi::Params p;
  p.slopes = {0.001f, 0.0f};  // weights spread over both chunks
  const Expected near = oracle(s, q, k, v, p);
  for (const float tolerance : {0.0f, alibi::Params::round_off}) {
    for (const double gap : {0.0, 1e9, 1e12}) {
      INFO("gap " << gap << ", tolerance " << tolerance);
      p.tail_tolerance = tolerance;
      p.query_offset = s.seq_k - 1 + index_t(gap);
      std::vector<float> out(s.out_size()), lse(s.lse_size());
      alibi::attention(q_view(s, q.data()), k_view(s, k.data()), v_view(s, v.data()),
                       out_view(s, out.data()), p, lse.data());
      CHECK(max_abs_diff(out, near.out) < 1e-6);
      const Expected far = oracle(s, q, k, v, p);
      CHECK(max_abs_diff(out, far.out) < 1e-6);  // the oracle agrees: it is exact there too
      for (std::size_t i = 0; i < lse.size(); ++i)
        CHECK(lse[i] == Approx(far.lse[i]).epsilon(1e-6));
    }
  }
}

TEST_CASE("a call over more than 2^24 keys keeps the bias exact", "[hardening][long]") {
  // 17 query rows (a prefill, not a decode step) at positions 2^24 + 3 + i; key 0 is aligned with
  // q so that its logit is s - m p = -(1 + i) / 4, all other keys are 0. Distances 2^24 + odd are
  // not floats: walked in one piece (before), the tile at key 0 rounded them, moving key 0's
  // logit by m = 1/4. Split calls keep every distance within a chunk below 2^24.
  const index_t Sq = 17, Sk = (index_t(1) << 24) + 20;
  const Shape s{1, Sq, Sk, 1, 1, 1, 1};
  const float m = 0.25f;
  std::vector<float> q(std::size_t(Sq), 1.0f), k(std::size_t(Sk), 0.0f), v(std::size_t(Sk), 0.0f);
  k[0] = 4194304.5f;  // 2^22 + 1/2, exact
  v[0] = 1.0f;
  alibi::Params p;
  p.slopes = {m};
  p.scale = 1.0f;
  std::vector<float> out(static_cast<std::size_t>(Sq));
  alibi::attention(q_view(s, q.data()), k_view(s, k.data()), v_view(s, v.data()),
                   out_view(s, out.data()), p);
  const double r = std::exp(-double(m));
  for (index_t i = 0; i < Sq; ++i) {
    const index_t position = Sk - Sq + i;
    // Keys 1..position at distances 0..position-1; key 0 at distance `position`.
    const double near = (1 - std::pow(r, double(position))) / (1 - r);
    const double w0 = std::exp(double(k[0]) - double(m) * double(position));
    INFO("row " << i);
    CHECK(out[std::size_t(i)] == Approx(w0 / (w0 + near)).epsilon(1e-5));
  }
}

TEST_CASE("the skip with every key far from the queries (a non-zero bias offset)",
          "[hardening][tail]") {
  // The bound measures distances from the row's bias offset, as its running max is: without the
  // offset terms it would see the far keys as 10^6 positions further than they are and stop the
  // walk at once.
  const Shape s{1, 4, 3000, 2, 2, 16, 16};
  const auto q = random_values<float>(s.q_size(), 381, 2.0f),
             k = random_values<float>(s.k_size(), 382, 2.0f),
             v = random_values<float>(s.v_size(), 383);
  for (const bool causal : {true, false}) {
    INFO("causal " << causal);
    alibi::Params p;
    p.causal = causal;
    p.slopes = {0.05f, 0.02f};
    p.query_offset = s.seq_k + 1000000;
    alibi::AttentionStats stats;
    p.stats = &stats;
    std::vector<float> out(s.out_size());
    alibi::attention(q_view(s, q.data()), k_view(s, k.data()), v_view(s, v.data()),
                     out_view(s, out.data()), p);
    CHECK(stats.keys_visited < stats.keys_allowed);
    CHECK(stats.keys_visited > stats.keys_allowed / 20);  // slopes 0.02 need about 1000 keys
    p.stats = nullptr;
    CHECK(max_abs_diff(out, oracle(s, q, k, v, p).out) < 1e-6);
  }
}

TEST_CASE("an exception on a worker thread reaches the calling thread", "[hardening][threads]") {
  // Before: thrown inside an OpenMP region or a std::thread, it called std::terminate.
  for (const int threads : {2, 3}) {
    INFO("threads " << threads);
    std::atomic<int> ran{0};
    CHECK_THROWS_AS(alibi::detail::parallel_tasks(200, threads,
                                                  [&] {
                                                    return [&](index_t task) {
                                                      ++ran;
                                                      if (task == 37) throw std::bad_alloc();
                                                    };
                                                  }),
                    std::bad_alloc);
    CHECK(ran >= 1);
    std::atomic<int> made{0};
    CHECK_THROWS_WITH(alibi::detail::parallel_tasks(200, threads,
                                                    [&] {
                                                      if (made++ == 1)
                                                        throw std::runtime_error("no scratch");
                                                      return [](index_t) {};
                                                    }),
                      "no scratch");
  }
  // And through a call: the library still works afterwards.
  const Shape s{1, 64, 64, 2, 2, 8, 8};
  const auto x = random_values<float>(s.q_size(), 391);
  std::vector<float> out(s.out_size());
  alibi::Params p;
  p.num_threads = 2;
  alibi::attention(q_view(s, x.data()), k_view(s, x.data()), v_view(s, x.data()),
                   out_view(s, out.data()), p);
  CHECK(max_abs_diff(out, oracle(s, x, x, x, p).out) < 1e-6);
}

TEST_CASE("the reference lse with a sink and every key 2^59 positions away is the sink's",
          "[hardening][reference]") {
  // Found by the fuzzer: taking the nearest distance out of the logits and putting it back
  // around a sink that dominates lost the sink (sink + m d - m d = 0 at d = 2^59).
  const Shape s{1, 2, 5, 1, 1, 4, 4};
  const auto q = random_values<double>(s.q_size(), 601), k = random_values<double>(s.k_size(), 602),
             v = random_values<double>(s.v_size(), 603);
  alibi::Params p;
  p.causal = false;
  p.slopes = {0.5f};
  p.sink_logits = {0.44477f};
  p.key_offset = index_t(1) << 59;
  p.query_offset = -3545399106;
  std::vector<double> out(s.out_size()), ref(s.out_size());
  std::vector<float> lse(s.lse_size()), ref_lse(s.lse_size());
  alibi::reference::attention(q_view(s, q.data()), k_view(s, k.data()), v_view(s, v.data()),
                              out_view(s, ref.data()), p, ref_lse.data());
  alibi::attention(q_view(s, q.data()), k_view(s, k.data()), v_view(s, v.data()),
                   out_view(s, out.data()), p, lse.data());
  for (std::size_t i = 0; i < lse.size(); ++i) {
    CHECK(ref_lse[i] == Approx(0.44477f).epsilon(1e-6));
    CHECK(lse[i] == Approx(0.44477f).epsilon(1e-6));
  }
  for (std::size_t i = 0; i < out.size(); ++i) CHECK(std::fabs(ref[i]) < 1e-300);
}

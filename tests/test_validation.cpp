// The checks at the public boundary: every bad argument of alibi::attention,
// alibi::reference::attention, fill_bias and bias_matrix throws std::invalid_argument naming the
// argument and the sizes seen, before anything is written; degenerate but valid calls do not throw.
#include <alibi/attention.hpp>
#include <alibi/bias.hpp>
#include <alibi/reference.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using alibi::index_t;
using View = alibi::TensorView<float>;
using AttentionFn = void (*)(alibi::TensorView<const float>, alibi::TensorView<const float>,
                             alibi::TensorView<const float>, View, const alibi::Params&, float*);

struct Impl {
  const char* prefix;  // how its messages start
  AttentionFn fn;
};
const Impl impls[] = {{"alibi::attention: ", &alibi::attention<float>},
                      {"alibi::reference::attention: ", &alibi::reference::attention<float>}};

constexpr float sentinel = 12345.f;
constexpr float inf = std::numeric_limits<float>::infinity();
constexpr float nan_value = std::numeric_limits<float>::quiet_NaN();
// The offset and extent bound is read from the library, which may tighten it.
constexpr index_t limit = alibi::detail::max_position, two62 = index_t(1) << 62;
const std::string past_limit = std::to_string(limit + 1);
constexpr index_t B = 2, Sq = 3, Sk = 5, Hq = 8, Hkv = 2, D = 3, Dv = 2;

bool all_equal(const std::vector<float>& x, std::size_t from, std::size_t to, float value) {
  return std::all_of(x.begin() + from, x.begin() + to, [&](float e) { return e == value; });
}

// A valid call. Buffers are far larger than the views, so a mutated view that a check wrongly
// lets through cannot take the kernel outside memory we own.
struct Call {
  std::vector<float> qb, kb, vb, ob, lb;
  View q, k, v, out;
  alibi::Params params;
  float* lse;

  Call() : qb(1024), kb(1024), vb(1024), ob(1024, sentinel), lb(1024, sentinel) {
    for (std::size_t i = 0; i < qb.size(); ++i) {
      qb[i] = std::sin(0.7f * i);
      kb[i] = std::cos(0.3f * i);
      vb[i] = std::sin(1.3f * i + 1.f);
    }
    q = alibi::make_view(qb.data(), B, Sq, Hq, D);
    k = alibi::make_view(kb.data(), B, Sk, Hkv, D);
    v = alibi::make_view(vb.data(), B, Sk, Hkv, Dv);
    out = alibi::make_view(ob.data(), B, Sq, Hq, Dv);
    lse = lb.data();
  }
  Call(const Call&) = delete;  // the views point into this object's buffers
  void run(const Impl& impl) const { impl.fn(q, k, v, out, params, lse); }
};

// An std::invalid_argument whose message contains every part.
class Mentions : public Catch::MatcherBase<std::invalid_argument> {
 public:
  explicit Mentions(std::vector<std::string> parts) : parts_(std::move(parts)) {}
  bool match(const std::invalid_argument& e) const override {
    const std::string what = e.what();
    return std::all_of(parts_.begin(), parts_.end(),
                       [&](const std::string& p) { return what.find(p) != std::string::npos; });
  }
  std::string describe() const override {
    std::string s = "has a message containing";
    for (const auto& p : parts_) s += " \"" + p + "\"";
    return s;
  }

 private:
  std::vector<std::string> parts_;
};

struct BadCase {
  std::function<void(Call&)> mutate;
  std::vector<std::string> parts;  // besides the function's name
};

std::vector<float> slopes_with(std::size_t n, std::size_t i, float x) {
  std::vector<float> s(n, 0.25f);
  s[i] = x;
  return s;
}

std::vector<BadCase> bad_attention_cases() {
  return {
      {[](Call& c) { c.k.shape[3] = 4; }, {"k has head_dim 4 but q has 3"}},
      {[](Call& c) { c.k.shape[0] = c.v.shape[0] = 1; }, {"k has batch 1 but q has 2"}},
      {[](Call& c) { c.v.shape[1] = 4; }, {"v [2, 4, 2, 2] must match k [2, 5, 2, 3]"}},
      {[](Call& c) { c.v.shape[2] = 1; }, {"v [2, 5, 1, 2] must match k [2, 5, 2, 3]"}},
      {[](Call& c) { c.v.shape[0] = 1; }, {"v [1, 5, 2, 2] must match k"}},
      {[](Call& c) { c.k.shape[2] = c.v.shape[2] = 3; }, {"k has 3 kv heads", "q's 8 heads"}},
      {[](Call& c) { c.out.shape[3] = 3; }, {"out has shape [2, 3, 8, 3]", "need [2, 3, 8, 2]"}},
      {[](Call& c) { c.out.shape[1] = 2; }, {"out has shape [2, 2, 8, 2]", "need [2, 3, 8, 2]"}},
      {[](Call& c) { c.out.shape[2] = 4; }, {"out has shape [2, 3, 4, 2]", "need [2, 3, 8, 2]"}},
      {[](Call& c) { c.out.shape[0] = 1; }, {"out has shape [1, 3, 8, 2]", "need [2, 3, 8, 2]"}},
      {[](Call& c) { c.q.shape[1] = -1; }, {"q has an invalid extent", "[2, -1, 8, 3]"}},
      {[](Call& c) { c.k.shape[3] = -3; }, {"k has an invalid extent", "[2, 5, 2, -3]"}},
      {[](Call& c) { c.v.shape[0] = -2; }, {"v has an invalid extent", "[-2, 5, 2, 2]"}},
      {[](Call& c) { c.out.shape[2] = -8; }, {"out has an invalid extent", "[2, 3, -8, 2]"}},
      {[](Call& c) { c.k.shape[1] = c.v.shape[1] = limit + 1; },
       {"k has an invalid extent", "[2, " + past_limit + ", 2, 3]"}},
      {[](Call& c) { c.q.shape[2] = 0; }, {"q needs at least one head", "[2, 3, 0, 3]"}},
      {[](Call& c) { c.v.shape[3] = 0; },
       {"v needs at least one head and head_dim >= 1", "[2, 5, 2, 0]"}},
      {[](Call& c) { c.q.data = nullptr; }, {"q is null but has shape [2, 3, 8, 3]"}},
      {[](Call& c) { c.k.data = nullptr; }, {"k is null but has shape [2, 5, 2, 3]"}},
      {[](Call& c) { c.out.data = nullptr; }, {"out is null but has shape [2, 3, 8, 2]"}},
      {[](Call& c) { c.params.slopes.assign(3, 0.5f); },
       {"params.slopes has 3 values", "8 query heads and batch 2", "needs 8 or 16"}},
      {[](Call& c) { c.params.slopes = slopes_with(Hq, 5, nan_value); },
       {"params.slopes[5] is not finite"}},
      {[](Call& c) { c.params.slopes = slopes_with(B * Hq, 11, -inf); },
       {"params.slopes[11] is not finite"}},
      // Its bias at 2^60 positions would overflow float (a row's lse read as -inf: no keys).
      {[](Call& c) { c.params.slopes = slopes_with(Hq, 2, 1e30f); },
       {"params.slopes[2] is not finite within +-2^64", "1000000015047466219876688855040"}},
      {[](Call& c) { c.params.scale = -0.5f; }, {"params.scale must be finite and >= 0", "-0.5"}},
      {[](Call& c) { c.params.scale = nan_value; }, {"params.scale", "nan"}},
      {[](Call& c) { c.params.scale = inf; }, {"params.scale", "inf"}},
      {[](Call& c) { c.params.window_left = -2; },
       {"window_left and window_right must be >= -1, got (-2, -1)"}},
      {[](Call& c) { c.params.window_right = -3; }, {"window_right must be >= -1, got (-1, -3)"}},
      {[](Call& c) { c.params.num_threads = -1; }, {"params.num_threads must be >= 0, got -1"}},
      {[](Call& c) { c.params.query_offset = limit + 1; },
       {"params.query_offset is outside +-2^", ": " + past_limit}},
      {[](Call& c) { c.params.key_offset = -limit - 1; },
       {"params.key_offset is outside +-2^", ": -" + past_limit}},
      {[](Call& c) { c.params.seqlens_k = {5}; },
       {"params.seqlens_k has 1 values but the batch is 2"}},
      {[](Call& c) {
         c.params.seqlens_k.assign({5, 6});
       },
       {"params.seqlens_k[1] = 6 is outside [0, 5]"}},
      {[](Call& c) {
         c.params.seqlens_k.assign({-1, 5});
       },
       {"params.seqlens_k[0] = -1 is outside [0, 5]"}},
      {[](Call& c) { c.out.data = c.qb.data(); }, {"out [2, 3, 8, 2] overlaps q in memory"}},
      {[](Call& c) { c.out.data = c.vb.data() + B * Sk * Hkv * Dv - 1; },
       {"out [2, 3, 8, 2] overlaps v"}},
      {[](Call& c) { c.out.data = c.kb.data() + 7; }, {"out [2, 3, 8, 2] overlaps k"}},
      {[](Call& c) {  // out's last element on q's first
         c.q.data += B * Sq * Hq * Dv - 1;
         c.out.data = c.qb.data();
       },
       {"out [2, 3, 8, 2] overlaps q"}},
      {[](Call& c) { c.out.strides[1] = 0; },
       {"out has overlapping elements", "shape [2, 3, 8, 2]", "strides [48, 0, 2, 1]"}},
      {[](Call& c) { c.out.strides[0] = 0; }, {"out has overlapping elements", "[0, 16, 2, 1]"}},
      {[](Call& c) { c.out.strides[2] = 1; }, {"out has overlapping elements", "[48, 16, 1, 1]"}},
      {[](Call& c) { c.lse = c.ob.data(); }, {"lse [2, 8, 3] overlaps out in memory"}},
      {[](Call& c) { c.lse = c.qb.data() + 100; }, {"lse overlaps q in memory"}},
      {[](Call& c) { c.lse = c.vb.data() + B * Sk * Hkv * Dv - 1; }, {"lse overlaps v in memory"}},
      {[](Call& c) {  // lse's last element on k's first
         c.k.data += B * Hq * Sq - 1;
         c.lse = c.kb.data();
       },
       {"lse overlaps k in memory"}},
      {[](Call& c) { c.q.strides[1] = two62; }, {"q strides overflow with shape [2, 3, 8, 3]"}},
      {[](Call& c) { c.out.strides[1] = two62; }, {"out strides overflow with shape [2, 3, 8, 2]"}},
  };
}

// `c` must throw invalid_argument mentioning `parts` and leave every buffer as it was.
void expect_rejected(const Impl& impl, const Call& c, std::vector<std::string> parts) {
  parts.insert(parts.begin(), impl.prefix);
  const std::vector<float> q0 = c.qb, k0 = c.kb, v0 = c.vb;
  CHECK_THROWS_MATCHES(c.run(impl), std::invalid_argument, Mentions(parts));
  CHECK((c.qb == q0 && c.kb == k0 && c.vb == v0));
  CHECK(all_equal(c.ob, 0, c.ob.size(), sentinel));
  CHECK(all_equal(c.lb, 0, c.lb.size(), sentinel));
}

}  // namespace

TEST_CASE("bad attention arguments throw, naming them and their sizes, before any write",
          "[validation]") {
  const Impl& impl = impls[GENERATE(0, 1)];
  INFO(impl.prefix);
  for (const BadCase& bad : bad_attention_cases()) {
    INFO(bad.parts.front());
    Call c;
    bad.mutate(c);
    expect_rejected(impl, c, bad.parts);
  }
}

TEST_CASE("Sk = 0 leaves every row empty: out 0, lse -inf", "[validation]") {
  const Impl& impl = impls[GENERATE(0, 1)];
  Call c;
  c.params.causal = GENERATE(true, false);
  c.k = View{nullptr, {B, 0, Hkv, D}, {0, 0, D, 1}};
  c.v = View{nullptr, {B, 0, Hkv, Dv}, {0, 0, Dv, 1}};
  REQUIRE_NOTHROW(c.run(impl));
  CHECK(all_equal(c.ob, 0, B * Sq * Hq * Dv, 0.f));
  CHECK(all_equal(c.ob, B * Sq * Hq * Dv, c.ob.size(), sentinel));
  CHECK(all_equal(c.lb, 0, B * Hq * Sq, -inf));
  CHECK(all_equal(c.lb, B * Hq * Sq, c.lb.size(), sentinel));
}

TEST_CASE("B = 0 and Sq = 0 are valid, null data included, and write nothing", "[validation]") {
  const Impl& impl = impls[GENERATE(0, 1)];
  const int empty_dim = GENERATE(0, 1);  // batch or query seq
  Call c;
  for (View* view : {&c.q, &c.out}) {
    view->shape[empty_dim] = 0;
    view->data = nullptr;
  }
  if (empty_dim == 0) c.k.shape[0] = c.v.shape[0] = 0;
  REQUIRE_NOTHROW(c.run(impl));
  CHECK(all_equal(c.ob, 0, c.ob.size(), sentinel));
  CHECK(all_equal(c.lb, 0, c.lb.size(), sentinel));
}

TEST_CASE("stride-0 inputs read like their materialised repetition", "[validation]") {
  const Impl& impl = impls[GENERATE(0, 1)];
  // One key and value row per (batch, kv head), repeated over the Sk positions.
  Call broadcast, materialised;
  broadcast.k.strides[1] = broadcast.v.strides[1] = 0;
  for (index_t b = 0; b < B; ++b)
    for (index_t t = 0; t < Sk; ++t)
      for (index_t h = 0; h < Hkv; ++h) {
        for (index_t d = 0; d < D; ++d) materialised.k(b, t, h, d) = broadcast.k(b, t, h, d);
        for (index_t d = 0; d < Dv; ++d) materialised.v(b, t, h, d) = broadcast.v(b, t, h, d);
      }
  REQUIRE_NOTHROW(broadcast.run(impl));
  REQUIRE_NOTHROW(materialised.run(impl));
  CHECK(broadcast.ob == materialised.ob);
  CHECK(broadcast.lb == materialised.lb);
  // Every value row is the same, so any softmax weights give that row back.
  for (index_t b = 0; b < B; ++b)
    for (index_t i = 0; i < Sq; ++i)
      for (index_t h = 0; h < Hq; ++h)
        for (index_t d = 0; d < Dv; ++d)
          CHECK(broadcast.out(b, i, h, d) ==
                Approx(broadcast.v(b, 0, h / (Hq / Hkv), d)).margin(1e-6));
}

TEST_CASE("params at the edges of their ranges are accepted", "[validation]") {
  const Impl& impl = impls[GENERATE(0, 1)];
  Call by_default, per_head, per_row;
  per_head.params.slopes = alibi::slopes(Hq);
  per_row.params.slopes = per_head.params.slopes;
  per_row.params.slopes.insert(per_row.params.slopes.end(), per_head.params.slopes.begin(),
                               per_head.params.slopes.end());
  REQUIRE_NOTHROW(by_default.run(impl));
  REQUIRE_NOTHROW(per_head.run(impl));
  REQUIRE_NOTHROW(per_row.run(impl));
  CHECK(per_head.ob == by_default.ob);
  CHECK(per_row.ob == by_default.ob);

  Call far;
  far.params.query_offset = limit;
  far.params.key_offset = -limit;
  far.params.causal = false;
  far.params.window_left = far.params.window_right = std::numeric_limits<index_t>::max();
  far.params.seqlens_k = {0, Sk};
  CHECK_NOTHROW(far.run(impl));
  CHECK(all_equal(far.lb, 0, Hq * Sq, -inf));  // batch row 0 has no valid key
  CHECK(std::all_of(far.ob.begin(), far.ob.begin() + B * Sq * Hq * Dv,
                    [](float x) { return std::isfinite(x); }));

  // window -1 means 2^62 inside; with the +-2^61 offsets once accepted, it masked these keys.
  alibi::Params farthest;
  farthest.query_offset = limit;
  farthest.key_offset = -limit;
  CHECK(alibi::bias_matrix(0.5f, 2, 2, farthest)(1, 0) == Approx(-0.5 * (2.0 * limit + 1)));

  Call single;  // a stride-0 out dimension of extent 1 has no duplicate elements
  single.q.shape[0] = single.k.shape[0] = single.v.shape[0] = single.out.shape[0] = 1;
  single.out.strides[0] = 0;
  CHECK_NOTHROW(single.run(impl));

  Call adjacent;  // out ends where q starts and lse where k starts: touching is not overlapping
  adjacent.q.data += B * Sq * Hq * Dv;
  adjacent.out.data = adjacent.qb.data();
  adjacent.k.data += B * Hq * Sq;
  adjacent.lse = adjacent.kb.data();
  CHECK_NOTHROW(adjacent.run(impl));
}

TEST_CASE("fill_bias and bias_matrix reject bad sizes and params, writing nothing",
          "[validation]") {
  std::vector<float> buf(256, sentinel);
  float* out = buf.data();
  alibi::Params three_slopes, short_seqlens, big_seqlens, nan_scale, bad_window, two_rows;
  three_slopes.slopes = {0.5f, 0.25f, 0.125f};
  short_seqlens.seqlens_k = {4};
  big_seqlens.seqlens_k = {1, 9};
  nan_scale.scale = nan_value;
  bad_window.window_left = -2;
  two_rows.seqlens_k = {2, 3};
  const std::string fb = "alibi::fill_bias: ", bm = "alibi::bias_matrix: ";
  const std::vector<std::pair<std::function<void()>, std::vector<std::string>>> cases = {
      {[&] { alibi::fill_bias(out, -1, 2, 3, 4); },
       {fb, "got batch -1, heads 2, seq_q 3, seq_k 4"}},
      {[&] { alibi::fill_bias(out, 1, 0, 3, 4); }, {fb, "heads >= 1", "heads 0"}},
      {[&] { alibi::fill_bias(out, 1, 2, -2, 4); }, {fb, "seq_q -2"}},
      {[&] { alibi::fill_bias(out, 1, 2, 3, -1); }, {fb, "seq_k -1"}},
      {[&] { alibi::fill_bias(nullptr, 1, 2, 3, 4); },
       {fb, "out is null but the bias has 24 elements"}},
      {[&] { alibi::fill_bias(out, 1, 2, 3, 4, three_slopes); },
       {fb, "params.slopes has 3 values", "2 query heads"}},
      {[&] { alibi::fill_bias(out, 2, 2, 3, 4, short_seqlens); },
       {fb, "params.seqlens_k has 1 values but the batch is 2"}},
      {[&] { alibi::fill_bias(out, 2, 2, 3, 4, big_seqlens); },
       {fb, "params.seqlens_k[1] = 9 is outside [0, 4]"}},
      {[&] { alibi::fill_bias(out, 1, 2, 3, 4, nan_scale); }, {fb, "params.scale"}},
      {[&] { alibi::bias_matrix(0.5f, 3, 4, {}, 1); }, {bm, "batch_row 1 is outside [0, 1)"}},
      {[&] { alibi::bias_matrix(0.5f, 3, 4, two_rows, -1); },
       {bm, "batch_row -1 is outside [0, 2)"}},
      {[&] { alibi::bias_matrix(0.5f, -1, 4); }, {bm, "seq_q -1"}},
      {[&] { alibi::bias_matrix(0.5f, 3, -4); }, {bm, "seq_k -4"}},
      {[&] { alibi::bias_matrix(nan_value, 3, 4); }, {bm, "params.slopes[0] is not finite"}},
      {[&] { alibi::bias_matrix(0.5f, 3, 4, bad_window); },
       {bm, "window_left and window_right must be >= -1"}},
  };
  for (std::size_t i = 0; i < cases.size(); ++i) {
    INFO("case " << i);
    CHECK_THROWS_MATCHES(cases[i].first(), std::invalid_argument, Mentions(cases[i].second));
  }
  CHECK(all_equal(buf, 0, buf.size(), sentinel));

  // bias_matrix takes its slope as an argument, so params.slopes of any count is ignored.
  CHECK(alibi::bias_matrix(0.5f, 3, 4, three_slopes) == alibi::bias_matrix(0.5f, 3, 4));
  CHECK_NOTHROW(alibi::fill_bias(nullptr, 0, 2, 3, 4));
}

TEST_CASE("a null k is rejected when its element count wraps int64 to 0", "[validation]") {
  const Impl& impl = impls[GENERATE(0, 1)];
  std::vector<float> qb(32, 1.f), vb(8, 1.f), ob(8, sentinel);
  const View k{nullptr, {1, limit, 1, 32}, {0, 0, 0, 0}};  // 2^59 or 2^61 times 32 wraps to 0
  const View v{vb.data(), {1, limit, 1, 1}, {0, 0, 0, 0}};
  // lse overlaps v: if k slipped through, the call still throws rather than read through null.
  CHECK_THROWS_MATCHES(impl.fn(alibi::make_view(qb.data(), 1, 1, 1, 32), k, v,
                               alibi::make_view(ob.data(), 1, 1, 1, 1), {}, vb.data()),
                       std::invalid_argument,
                       Mentions({impl.prefix, "k ", "[1, " + std::to_string(limit) + ", 1, 32]"}));
}

// Sizes and strides whose sums or products overflow int64. The attention calls also pass an lse
// overlapping k, so that a view which slipped through would still end in a throw (with the wrong
// message) instead of running the kernel on it.

TEST_CASE("an input whose reach fits per dimension but not in elements or bytes is rejected",
          "[validation]") {
  const Impl& impl = impls[GENERATE(0, 1)];
  // Furthest element at 2^63 elements (sum overflows), or 2^62 + 1 (its byte offset overflows).
  const index_t dim_stride = GENERATE(two62, index_t(1));
  std::vector<float> qb(8, 1.f), kb(8, 1.f), vb(8, 1.f), ob(8, sentinel);
  const View q{qb.data(), {1, 2, 1, 2}, {0, two62, 0, dim_stride}};
  CHECK_THROWS_MATCHES(
      impl.fn(q, alibi::make_view(kb.data(), 1, 1, 1, 2), alibi::make_view(vb.data(), 1, 1, 1, 1),
              alibi::make_view(ob.data(), 1, 2, 1, 1), {}, kb.data()),
      std::invalid_argument, Mentions({impl.prefix, "q strides overflow"}));
}

TEST_CASE("out with duplicate elements is rejected when its stride sums pass int64",
          "[validation]") {
  const Impl& impl = impls[GENERATE(0, 1)];
  std::vector<float> qb(16, 1.f), kb(16, 1.f), vb(16, 1.f), ob(16, sentinel);
  // (1, 0, h, d) and (0, 1, h, d) share an address; `covered` wraps negative before the second.
  const View out{ob.data(), {2, 2, 2, 2}, {two62 + 2, two62 + 2, two62, 1}};
  const auto names_out = [](const std::invalid_argument& e) {
    const std::string what = e.what();
    return what.find("out has overlapping elements") != std::string::npos ||
           what.find("out strides overflow") != std::string::npos;
  };
  CHECK_THROWS_MATCHES(
      impl.fn(alibi::make_view(qb.data(), 2, 2, 2, 1), alibi::make_view(kb.data(), 2, 1, 2, 1),
              alibi::make_view(vb.data(), 2, 1, 2, 2), out, {}, kb.data()),
      std::invalid_argument,
      Catch::Predicate<std::invalid_argument>(names_out, "names out's elements or strides"));
}

TEST_CASE("an lse of zero elements (Sq = 0) overlaps nothing", "[validation]") {
  const Impl& impl = impls[GENERATE(0, 1)];
  Call c;
  c.q.shape[1] = c.out.shape[1] = 0;
  c.lse = c.kb.data() + 3;  // an empty [base, base) span, but inside k's
  CHECK_NOTHROW(c.run(impl));
}

TEST_CASE("fill_bias rejects a null out whose element count wraps int64 to 0", "[validation]") {
  // 2^32 x 2^32 elements wrap to 0: without the overflow check the null test passes and the
  // call writes through null.
  CHECK_THROWS_MATCHES(alibi::fill_bias(nullptr, 1, 1, index_t(1) << 32, index_t(1) << 32),
                       std::invalid_argument,
                       Mentions({"alibi::fill_bias", "more elements than memory", "4294967296"}));
}

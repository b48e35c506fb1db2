// libFuzzer target: bytes become shapes, strides, Params and data, fed to every public entry
// point (alibi::attention in float and double, attention_backward, merge, the KV cache). The
// contract checked: either std::invalid_argument before anything is written (every output
// keeps its sentinel), or a result that agrees with alibi::reference on finite data. Anything
// else aborts (and ASan/UBSan report memory and undefined behaviour on their own).
//
//   clang++ -fsanitize=fuzzer,address,undefined; see tests/fuzz/CMakeLists.txt and the README.
#include <alibi/alibi.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <vector>

namespace {

using alibi::index_t;

/// Reads the fuzzer's bytes as small integers and choices; zeros once they run out.
class Bytes {
 public:
  Bytes(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}
  std::uint8_t byte() { return at_ < size_ ? data_[at_++] : 0; }
  std::uint32_t u32() {
    std::uint32_t x = 0;
    for (int i = 0; i < 4; ++i) x = x << 8 | byte();
    return x;
  }
  /// In [lo, hi].
  index_t range(index_t lo, index_t hi) { return lo + index_t(u32() % std::uint32_t(hi - lo + 1)); }
  bool chance(int percent) { return byte() % 100 < percent; }
  std::size_t left() const { return size_ - at_; }

 private:
  const std::uint8_t* data_;
  std::size_t size_, at_ = 0;
};

struct Problem;
const Problem* current = nullptr;  // printed when the contract breaks
void print(const Problem& p);

[[noreturn]] void fail(const char* what, double a = 0, double b = 0) {
  std::fprintf(stderr, "contract broken: %s (%.9g vs %.9g)\n", what, a, b);
  if (current != nullptr) print(*current);
  std::abort();
}

/// A float parameter: usually tame, sometimes an edge value.
float edgy(Bytes& in, float tame_lo, float tame_hi) {
  switch (in.byte() % 16) {
    case 0:
      return std::numeric_limits<float>::quiet_NaN();
    case 1:
      return std::numeric_limits<float>::infinity();
    case 2:
      return -std::numeric_limits<float>::infinity();
    case 3:
      return -1.0f;
    case 4:
      return 0.0f;
    case 5:
      return 1e30f;
    default:
      return tame_lo + (tame_hi - tame_lo) * float(in.u32() % 65536) / 65535.0f;
  }
}

index_t offset_value(Bytes& in) {
  const index_t limit = index_t(1) << 59;
  switch (in.byte() % 8) {
    case 0:
      return limit;
    case 1:
      return -limit;
    case 2:
      return limit + 1;  // refused
    case 3:
      return index_t(in.u32()) * 1000003;  // far, ~1e15
    case 4:
      return -index_t(in.u32());
    default:
      return index_t(in.u32() % 4000) - 2000;
  }
}

struct Problem {
  index_t B, Sq, Sk, Hq, Hkv, D, Dv;
  alibi::Params params;
  bool finite_data = true;
};

void print(const Problem& p) {
  const alibi::Params& q = p.params;
  std::fprintf(stderr,
               "B %lld Sq %lld Sk %lld Hq %lld Hkv %lld D %lld Dv %lld causal %d scale %g\n",
               (long long)p.B, (long long)p.Sq, (long long)p.Sk, (long long)p.Hq, (long long)p.Hkv,
               (long long)p.D, (long long)p.Dv, int(q.causal), double(q.scale));
  std::fprintf(stderr, "window %lld %lld tolerance %g threads %d offsets q %lld k %lld\n",
               (long long)q.window_left, (long long)q.window_right, double(q.tail_tolerance),
               q.num_threads, q.query_offset ? (long long)*q.query_offset : -999LL,
               q.key_offset ? (long long)*q.key_offset : -999LL);
  std::fprintf(stderr, "slopes");
  for (float m : q.slopes) std::fprintf(stderr, " %g", double(m));
  std::fprintf(stderr, "\nseqlens_k");
  for (index_t n : q.seqlens_k) std::fprintf(stderr, " %lld", (long long)n);
  std::fprintf(stderr, "\nseqlens_q");
  for (index_t n : q.seqlens_q) std::fprintf(stderr, " %lld", (long long)n);
  std::fprintf(stderr, "\nsinks");
  for (float s : q.sink_logits) std::fprintf(stderr, " %g", double(s));
  std::fprintf(stderr, "\n");
}

Problem make_problem(Bytes& in) {
  Problem p{};
  p.B = in.range(0, 3);
  p.Sq = in.range(0, in.chance(20) ? 40 : 9);
  p.Sk = in.range(0, in.chance(15) ? 1200 : 40);
  p.Hkv = in.range(1, 3);
  p.Hq = p.Hkv * in.range(1, 3);
  if (in.chance(3)) p.Hq += 1;  // not a multiple: refused
  p.D = in.range(1, in.chance(30) ? 33 : 8);
  p.Dv = in.chance(50) ? p.D : in.range(1, 17);
  alibi::Params& q = p.params;
  q.causal = in.chance(60);
  const int slopes = in.byte() % 4;
  if (slopes == 1 || slopes == 2) {
    const index_t n = slopes == 1 ? p.Hq : p.B * p.Hq + (in.chance(5) ? 1 : 0);
    for (index_t i = 0; i < n; ++i) q.slopes.push_back(edgy(in, -0.6f, 1.0f));
  }
  if (in.chance(30)) q.scale = edgy(in, 0.0f, 3.0f);
  if (in.chance(25)) q.window_left = in.chance(10) ? -2 : in.range(0, 50);
  if (in.chance(25)) q.window_right = in.chance(10) ? -2 : in.range(0, 50);
  if (in.chance(25)) q.query_offset = offset_value(in);
  if (in.chance(25)) q.key_offset = offset_value(in);
  if (in.chance(25)) {
    const index_t n = in.chance(5) ? p.B + 1 : p.B;
    for (index_t b = 0; b < n; ++b)
      q.seqlens_k.push_back(in.range(in.chance(5) ? -1 : 0, p.Sk + (in.chance(5) ? 1 : 0)));
  }
  if (in.chance(30)) q.tail_tolerance = in.chance(50) ? 0.0f : edgy(in, 0.0f, 1e-3f);
  if (in.chance(10))
    for (index_t h = 0; h < p.Hq + (in.chance(5) ? 1 : 0); ++h)
      q.sink_logits.push_back(edgy(in, -4, 4));
  if (in.chance(10))
    for (index_t b = 0; b < p.B; ++b) q.seqlens_q.push_back(in.range(in.chance(5) ? -1 : 0, p.Sq));
  q.num_threads = in.chance(10) ? 2 : 1;
  return p;
}

/// Storage of a view inside a buffer: its data offset and strides (possibly invalid on purpose).
struct Layout {
  index_t offset;
  std::array<index_t, 4> strides;
  index_t span;  // elements the buffer needs
};

/// A layout for shape s: contiguous, head-major (transposed), reversed sequence, padded, or
/// random strides (often invalid or overlapping: must then be refused).
Layout make_layout(Bytes& in, const std::array<index_t, 4>& s) {
  const index_t B = s[0], S = s[1], H = s[2], D = s[3];
  Layout l{0, {S * H * D, H * D, D, 1}, B * S * H * D};
  switch (in.byte() % 8) {
    case 1:  // [B, H, S, D] storage
      l.strides = {H * S * D, D, S * D, 1};
      break;
    case 2:  // reversed positions
      l.strides = {S * H * D, -H * D, D, 1};
      l.offset = (S > 0 ? S - 1 : 0) * H * D;
      break;
    case 3: {  // padded rows and a strided head_dim
      const index_t pad = in.range(0, 3);
      l.strides = {S * (H * 2 * D + pad), H * 2 * D + pad, 2 * D, 2};
      l.span = B * S * (H * 2 * D + pad);
      break;
    }
    case 4: {  // random strides, signed
      index_t low = 0, high = 0;
      for (int i = 0; i < 4; ++i) {
        l.strides[i] = in.range(-12, 12);
        const index_t reach = l.strides[i] * (s[i] > 0 ? s[i] - 1 : 0);
        (reach < 0 ? low : high) += reach;
      }
      l.offset = -low;
      l.span = high - low + 1;
      break;
    }
    default:
      break;
  }
  return l;
}

template <class T>
T value(Bytes& in, bool& finite) {
  const std::uint8_t kind = in.byte();
  if (kind == 255) {
    finite = false;
    return T(std::numeric_limits<float>::quiet_NaN());
  }
  return T(float(int(in.byte()) - 128) / 64.0f);
}

template <class T>
struct Tensor {
  std::vector<T> buffer;
  alibi::TensorView<T> view;
};

/// A tensor of shape s in its own buffer (plus slack for shifted views), filled from the bytes.
template <class T>
Tensor<T> make_tensor(Bytes& in, const std::array<index_t, 4>& s, bool& finite) {
  const Layout l = make_layout(in, s);
  Tensor<T> t;
  t.buffer.resize(static_cast<std::size_t>(std::max<index_t>(l.span, 1) + 8));
  for (T& x : t.buffer) x = value<T>(in, finite);
  t.view = alibi::TensorView<T>(t.buffer.data() + l.offset, s, l.strides);
  return t;
}

constexpr float sentinel = 1234.5f;

template <class T>
double to_double(T x) {
  return double(x);
}

/// Tolerance of the kernel against the reference for this problem: the round-off of the logits
/// that carry weight (scores up to scale |q| |k| D; biases within a few scores of the row's max,
/// or, with a negative slope, up to |m| times the span of the keys), of the sums over the keys,
/// and the tail bound.
template <class T>
double tolerance(const alibi::detail::Geometry& g, double max_q, double max_k, double max_v) {
  const double u = std::is_same<T, double>::value ? 0x1p-53 : 0x1p-24;
  double negative = 0;
  for (float m : g.slopes) negative = std::max(negative, -double(m));
  const double score = double(g.scale) * max_q * max_k * double(g.head_dim);
  const double logits = 3 * score + 40 + negative * double(g.seq_k + 1024);
  return max_v * (16 * u * logits + 4 * u * double(g.seq_k + 1) + 4 * double(g.tail_tolerance)) +
         1e-30;
}

template <class T>
double max_abs(const alibi::TensorView<const T>& v) {
  double m = 0;
  for (index_t b = 0; b < v.batch(); ++b)
    for (index_t s = 0; s < v.seq(); ++s)
      for (index_t h = 0; h < v.heads(); ++h)
        for (index_t d = 0; d < v.head_dim(); ++d)
          m = std::max(m, std::fabs(to_double(v(b, s, h, d))));
  return m;
}

/// alibi::attention against alibi::reference::attention.
template <class T>
void check_forward(Bytes& in, Problem& p) {
  bool finite = p.finite_data;
  auto q = make_tensor<T>(in, {p.B, p.Sq, p.Hq, p.D}, finite);
  auto k = make_tensor<T>(in, {p.B, p.Sk, p.Hkv, p.D}, finite);
  auto v = make_tensor<T>(in, {p.B, p.Sk, p.Hkv, p.Dv}, finite);
  auto out = make_tensor<T>(in, {p.B, p.Sq, p.Hq, p.Dv}, finite);
  for (T& x : out.buffer) x = T(sentinel);
  const index_t rows = p.B * p.Hq * p.Sq;
  std::vector<float> lse(static_cast<std::size_t>(rows + 4), sentinel);
  const bool with_lse = in.chance(70);
  // Sometimes out is placed inside an input buffer: must be refused unless no element is shared.
  std::vector<T> ref_out(static_cast<std::size_t>(p.B * p.Sq * p.Hq * p.Dv));
  std::vector<float> ref_lse(static_cast<std::size_t>(rows));
  alibi::TensorView<const T> qv = q.view, kv = k.view, vv = v.view;
  bool ref_ok = true;
  try {
    alibi::reference::attention(qv, kv, vv, alibi::make_view(ref_out.data(), p.B, p.Sq, p.Hq, p.Dv),
                                p.params, ref_lse.data());
  } catch (const std::invalid_argument&) {
    ref_ok = false;
  }
  try {
    alibi::attention(qv, kv, vv, out.view, p.params, with_lse ? lse.data() : nullptr);
  } catch (const std::invalid_argument&) {
    for (const T& x : out.buffer)
      if (!(to_double(x) == double(sentinel))) fail("out written before a throw");
    for (float x : lse)
      if (!(x == sentinel)) fail("lse written before a throw");
    return;  // the reference may accept what only the kernel's view checks refuse (ref_out is
             // contiguous): both are the same validation otherwise
  }
  if (!ref_ok) fail("the kernel accepted what the reference refused");
  if (!finite) return;
  const alibi::detail::Geometry g =
      alibi::detail::validate_forward("fuzz", qv, kv, vv, out.view, p.params, nullptr);
  const double tol = tolerance<T>(g, max_abs(qv), max_abs(kv), max_abs(vv));
  for (index_t b = 0; b < p.B; ++b)
    for (index_t i = 0; i < p.Sq; ++i)
      for (index_t h = 0; h < p.Hq; ++h) {
        const float expected_lse = ref_lse[std::size_t((b * p.Hq + h) * p.Sq + i)];
        const float got_lse = lse[std::size_t((b * p.Hq + h) * p.Sq + i)];
        for (index_t d = 0; d < p.Dv; ++d) {
          const double got = to_double(out.view(b, i, h, d));
          const double want =
              to_double(ref_out[std::size_t(((b * p.Sq + i) * p.Hq + h) * p.Dv + d)]);
          // An empty row's reference out is exactly 0 (an lse of -inf alone may be a float
          // underflow of a far row's true lse, -m d beyond -FLT_MAX): it must be exactly 0 here.
          if (std::isinf(expected_lse) && want == 0 && got != 0)
            fail("an empty row is not 0", got, 0);
          if (!(std::fabs(got - want) <= tol)) fail("out disagrees with the reference", got, want);
        }
        if (with_lse) {
          if (std::isinf(expected_lse) != std::isinf(got_lse))
            fail("lse -inf", got_lse, expected_lse);
          if (!std::isinf(expected_lse) &&
              !(std::fabs(double(got_lse) - double(expected_lse)) <=
                tol / std::max(1e-30, max_abs(vv)) + 4e-7 * std::fabs(double(expected_lse))))
            fail("lse disagrees with the reference", got_lse, expected_lse);
        }
      }
  // Nothing outside out's elements was written.
  std::vector<bool> inside(out.buffer.size(), false);
  for (index_t b = 0; b < p.B; ++b)
    for (index_t i = 0; i < p.Sq; ++i)
      for (index_t h = 0; h < p.Hq; ++h)
        for (index_t d = 0; d < p.Dv; ++d)
          inside[std::size_t(&out.view(b, i, h, d) - out.buffer.data())] = true;
  for (std::size_t j = 0; j < out.buffer.size(); ++j)
    if (!inside[j] && !(to_double(out.buffer[j]) == double(sentinel))) fail("wrote outside out");
  if (with_lse)
    for (std::size_t j = std::size_t(rows); j < lse.size(); ++j)
      if (lse[j] != sentinel) fail("wrote past lse");
}

/// The fused backward against the reference backward, given the reference forward.
void check_backward(Bytes& in, Problem& p) {
  bool finite = true;
  auto q = make_tensor<float>(in, {p.B, p.Sq, p.Hq, p.D}, finite);
  auto k = make_tensor<float>(in, {p.B, p.Sk, p.Hkv, p.D}, finite);
  auto v = make_tensor<float>(in, {p.B, p.Sk, p.Hkv, p.Dv}, finite);
  auto dout = make_tensor<float>(in, {p.B, p.Sq, p.Hq, p.Dv}, finite);
  auto dq = make_tensor<float>(in, {p.B, p.Sq, p.Hq, p.D}, finite);
  auto dk = make_tensor<float>(in, {p.B, p.Sk, p.Hkv, p.D}, finite);
  auto dv = make_tensor<float>(in, {p.B, p.Sk, p.Hkv, p.Dv}, finite);
  for (auto* t : {&dq, &dk, &dv})
    for (float& x : t->buffer) x = sentinel;
  std::vector<float> out(static_cast<std::size_t>(p.B * p.Sq * p.Hq * p.Dv)),
      lse(static_cast<std::size_t>(p.B * p.Hq * p.Sq) + 1);
  const auto ov = alibi::make_view<const float>(out.data(), p.B, p.Sq, p.Hq, p.Dv);
  try {
    alibi::reference::attention<float>(q.view, k.view, v.view,
                                       alibi::make_view(out.data(), p.B, p.Sq, p.Hq, p.Dv),
                                       p.params, lse.data());
  } catch (const std::invalid_argument&) {
    return;
  }
  std::vector<float> ds(p.params.slopes.empty() ? std::size_t(p.Hq) : p.params.slopes.size(),
                        sentinel);
  try {
    alibi::attention_backward<float>(q.view, k.view, v.view, ov, dout.view, lse.data(), dq.view,
                                     dk.view, dv.view, p.params, ds.data());
  } catch (const std::invalid_argument&) {
    for (auto* t : {&dq, &dk, &dv})
      for (float x : t->buffer)
        if (x != sentinel) fail("a gradient written before a throw");
    return;
  }
  if (!finite) return;
  std::vector<float> rq(static_cast<std::size_t>(p.B * p.Sq * p.Hq * p.D)),
      rk(static_cast<std::size_t>(p.B * p.Sk * p.Hkv * p.D)),
      rv(static_cast<std::size_t>(p.B * p.Sk * p.Hkv * p.Dv)), rs(ds.size());
  alibi::reference::attention_backward<float>(q.view, k.view, v.view, ov, dout.view, lse.data(),
                                              alibi::make_view(rq.data(), p.B, p.Sq, p.Hq, p.D),
                                              alibi::make_view(rk.data(), p.B, p.Sk, p.Hkv, p.D),
                                              alibi::make_view(rv.data(), p.B, p.Sk, p.Hkv, p.Dv),
                                              p.params, rs.data());
  const alibi::detail::Geometry g = alibi::detail::forward_geometry(
      "fuzz", alibi::TensorView<const float>(q.view), alibi::TensorView<const float>(k.view),
      alibi::TensorView<const float>(v.view), ov, p.params);
  // Gradients are products of P, dP and the data; compared where the forward is well
  // conditioned, relative to the largest gradient.
  if (tolerance<float>(g, max_abs<float>(q.view), max_abs<float>(k.view), 1) > 1e-4) return;
  double largest = 0;
  for (const auto* r : {&rq, &rk, &rv})
    for (float x : *r) largest = std::max(largest, std::fabs(double(x)));
  const double tol = 2e-3 * (1 + largest);
  const auto compare = [&](const alibi::TensorView<float>& got, const std::vector<float>& want) {
    index_t j = 0;
    for (index_t b = 0; b < got.batch(); ++b)
      for (index_t s = 0; s < got.seq(); ++s)
        for (index_t h = 0; h < got.heads(); ++h)
          for (index_t d = 0; d < got.head_dim(); ++d, ++j)
            if (!(std::fabs(double(got(b, s, h, d)) - double(want[std::size_t(j)])) <= tol))
              fail("a gradient disagrees with the reference", got(b, s, h, d),
                   want[std::size_t(j)]);
  };
  compare(dq.view, rq);
  compare(dk.view, rk);
  compare(dv.view, rv);
}

/// Attention over keys [0, a) and [a, Sk) merged, against the reference over all keys. Offsets
/// stay moderate: a float lse can only carry a merge where |lse| is (see alibi::merge).
void check_merge(Bytes& in, Problem& p) {
  bool finite = true;
  p.params.key_offset.reset();
  p.params.seqlens_k.clear();
  p.params.sink_logits.clear();  // a sink belongs to the whole row: each partial would count it
  if (!p.params.query_offset || std::llabs(*p.params.query_offset) > 5000)
    p.params.query_offset = p.Sk - p.Sq;
  auto q = make_tensor<float>(in, {p.B, p.Sq, p.Hq, p.D}, finite);
  const index_t row = p.Hkv * p.D, vrow = p.Hkv * p.Dv;
  // One spare element: views of zero keys still point into the buffer.
  std::vector<float> k(static_cast<std::size_t>(p.B * p.Sk * row + 1)),
      v(static_cast<std::size_t>(p.B * p.Sk * vrow + 1));
  for (float& x : k) x = value<float>(in, finite);
  for (float& x : v) x = value<float>(in, finite);
  const index_t a = p.Sk == 0 ? 0 : in.range(0, p.Sk);
  const index_t n = p.B * p.Sq * p.Hq * p.Dv, rows = p.B * p.Hq * p.Sq;
  std::vector<float> left(static_cast<std::size_t>(n)), right(static_cast<std::size_t>(n)),
      whole(static_cast<std::size_t>(n)), ll(static_cast<std::size_t>(rows)),
      lr(static_cast<std::size_t>(rows)), lw(static_cast<std::size_t>(rows));
  const auto part = [&](index_t begin, index_t end, float* out, float* lse) {
    alibi::Params pp = p.params;
    pp.key_offset = begin;
    alibi::attention<float>(
        q.view,
        alibi::make_view<const float>(k.data() + begin * row, {p.B, end - begin, p.Hkv, p.D},
                                      {p.Sk * row, row, p.D, 1}),
        alibi::make_view<const float>(v.data() + begin * vrow, {p.B, end - begin, p.Hkv, p.Dv},
                                      {p.Sk * vrow, vrow, p.Dv, 1}),
        alibi::make_view(out, p.B, p.Sq, p.Hq, p.Dv), pp, lse);
  };
  try {
    alibi::reference::attention<float>(
        q.view, alibi::make_view<const float>(k.data(), p.B, p.Sk, p.Hkv, p.D),
        alibi::make_view<const float>(v.data(), p.B, p.Sk, p.Hkv, p.Dv),
        alibi::make_view(whole.data(), p.B, p.Sq, p.Hq, p.Dv), p.params, lw.data());
    part(0, a, left.data(), ll.data());
    part(a, p.Sk, right.data(), lr.data());
  } catch (const std::invalid_argument&) {
    return;
  }
  alibi::merge<float>(alibi::make_view<const float>(left.data(), p.B, p.Sq, p.Hq, p.Dv), ll.data(),
                      alibi::make_view<const float>(right.data(), p.B, p.Sq, p.Hq, p.Dv), lr.data(),
                      alibi::make_view(left.data(), p.B, p.Sq, p.Hq, p.Dv), ll.data());
  if (!finite) return;
  for (float x : lw)
    if (std::fabs(x) > 1e4f) return;  // beyond what float lse merges carry
  const alibi::detail::Geometry g = alibi::detail::forward_geometry(
      "fuzz", alibi::TensorView<const float>(q.view),
      alibi::make_view<const float>(k.data(), p.B, p.Sk, p.Hkv, p.D),
      alibi::make_view<const float>(v.data(), p.B, p.Sk, p.Hkv, p.Dv),
      alibi::make_view(whole.data(), p.B, p.Sq, p.Hq, p.Dv), p.params);
  const double tol = 4 * tolerance<float>(g, max_abs<float>(q.view), 2, 2) + 1e-5;
  for (std::size_t j = 0; j < whole.size(); ++j)
    if (!(std::fabs(double(left[j]) - double(whole[j])) <= tol))
      fail("merge disagrees with the reference", left[j], whole[j]);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Bytes in(data, size);
  const int entry = in.byte() % 5;
  Problem p = make_problem(in);
  current = &p;
  // Keep the reference (O(B Sq Sk H D)) cheap enough for a million inputs.
  if (p.B * p.Sq * p.Sk * p.Hq * std::max(p.D, p.Dv) > 100000) return 0;
  switch (entry) {
    case 0:
    case 1:
      check_forward<float>(in, p);
      break;
    case 2:
      check_forward<double>(in, p);
      break;
    case 3:
      check_backward(in, p);
      break;
    default:
      check_merge(in, p);
      break;
  }
  return 0;
}

// alibi/mpi.hpp: every rank's slice against the float64 oracle of the whole sequence
// (alibi::reference::attention in double on the same data), for 1 to 4 ranks.
#include <alibi/alibi.hpp>
#include <alibi/mpi.hpp>

#include <catch2/catch.hpp>

#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace {

using alibi::index_t;

int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}
int world_size() {
  int p = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &p);
  return p;
}

std::vector<float> uniform(std::size_t n, std::uint32_t seed, float amplitude) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-amplitude, amplitude);
  std::vector<float> x(n);
  for (float& e : x) e = u(rng);
  return x;
}

/// Global position of each local token of `rank`, written from the layout's definition.
std::vector<index_t> positions_of(const std::vector<index_t>& lengths, int rank, bool zigzag) {
  const int P = int(lengths.size());
  std::vector<index_t> pos;
  if (!zigzag) {
    index_t start = 0;
    for (int r = 0; r < rank; ++r) start += lengths[std::size_t(r)];
    for (index_t i = 0; i < lengths[std::size_t(rank)]; ++i) pos.push_back(start + i);
    return pos;
  }
  // Halves: the first halves of ranks 0..P-1, then the second halves of ranks P-1..0.
  std::vector<index_t> first(static_cast<std::size_t>(P)), second(first);
  index_t at = 0;
  for (int r = 0; r < P; ++r) {
    first[std::size_t(r)] = at;
    at += lengths[std::size_t(r)] / 2;
  }
  for (int r = P - 1; r >= 0; --r) {
    second[std::size_t(r)] = at;
    at += lengths[std::size_t(r)] - lengths[std::size_t(r)] / 2;
  }
  const index_t half = lengths[std::size_t(rank)] / 2;
  for (index_t i = 0; i < lengths[std::size_t(rank)]; ++i)
    pos.push_back(i < half ? first[std::size_t(rank)] + i : second[std::size_t(rank)] + i - half);
  return pos;
}

struct Case {
  std::string name;
  index_t batch = 1, heads_q = 2, heads_kv = 2, head_dim = 8, value_dim = 8;
  std::vector<index_t> lengths;  // per rank
  alibi::Params params;
  bool zigzag = false;
  float amplitude = 1.0f;
};

/// Rows [positions] of a contiguous global [B, S, H, X] tensor, as a local [B, n, H, X] one.
std::vector<float> gather_rows(const std::vector<float>& global, index_t B, index_t S, index_t H,
                               index_t X, const std::vector<index_t>& positions) {
  const index_t n = index_t(positions.size());
  std::vector<float> local(std::size_t(B * n * H * X));
  for (index_t b = 0; b < B; ++b)
    for (index_t i = 0; i < n; ++i)
      std::copy_n(global.data() + ((b * S + positions[std::size_t(i)]) * H) * X, H * X,
                  local.data() + ((b * n + i) * H) * X);
  return local;
}

struct Result {
  double out_error = 0, lse_error = 0;  // max |diff| / max |v|, max |diff| of finite lse
  bool lse_infinite_agree = true;
  alibi::mpi::Stats stats;
};

/// Runs the case on every rank: this rank's slice through alibi::mpi::attention, against the
/// oracle's rows at the same positions.
Result run_forward(const Case& c) {
  const int P = world_size(), me = world_rank();
  REQUIRE(int(c.lengths.size()) == P);
  index_t S = 0;
  for (index_t n : c.lengths) S += n;
  const index_t B = c.batch, Hq = c.heads_q, Hkv = c.heads_kv, D = c.head_dim, Dv = c.value_dim;
  const std::vector<float> q = uniform(std::size_t(B * S * Hq * D), 1, c.amplitude),
                           k = uniform(std::size_t(B * S * Hkv * D), 2, c.amplitude),
                           v = uniform(std::size_t(B * S * Hkv * Dv), 3, 1.0f);

  // The oracle: the whole sequence in double on every rank.
  std::vector<double> qd(q.begin(), q.end()), kd(k.begin(), k.end()), vd(v.begin(), v.end());
  std::vector<double> expected(std::size_t(B * S * Hq * Dv));
  std::vector<float> expected_lse(std::size_t(B * Hq * S));
  alibi::Params whole = c.params;
  whole.stats = nullptr;
  alibi::reference::attention<double>(alibi::make_view(qd.data(), B, S, Hq, D),
                                      alibi::make_view(kd.data(), B, S, Hkv, D),
                                      alibi::make_view(vd.data(), B, S, Hkv, Dv),
                                      alibi::make_view(expected.data(), B, S, Hq, Dv), whole,
                                      expected_lse.data());

  const std::vector<index_t> pos = positions_of(c.lengths, me, c.zigzag);
  const index_t n = index_t(pos.size());
  const std::vector<float> lq = gather_rows(q, B, S, Hq, D, pos),
                           lk = gather_rows(k, B, S, Hkv, D, pos),
                           lv = gather_rows(v, B, S, Hkv, Dv, pos);
  std::vector<float> out(std::size_t(B * n * Hq * Dv), -7.0f), lse(std::size_t(B * Hq * n));
  Result r;
  alibi::mpi::attention<float>(MPI_COMM_WORLD, alibi::make_view(lq.data(), B, n, Hq, D),
                               alibi::make_view(lk.data(), B, n, Hkv, D),
                               alibi::make_view(lv.data(), B, n, Hkv, Dv),
                               alibi::make_view(out.data(), B, n, Hq, Dv), c.params, lse.data(),
                               &r.stats,
                               c.zigzag ? alibi::mpi::Layout::zigzag
                                        : alibi::mpi::Layout::contiguous);
  double vmax = 0;
  for (float x : v) vmax = std::max(vmax, double(std::fabs(x)));
  for (index_t b = 0; b < B; ++b)
    for (index_t i = 0; i < n; ++i)
      for (index_t h = 0; h < Hq; ++h) {
        const index_t p = pos[std::size_t(i)];
        for (index_t d = 0; d < Dv; ++d)
          r.out_error = std::max(
              r.out_error, std::fabs(double(out[std::size_t(((b * n + i) * Hq + h) * Dv + d)]) -
                                     expected[std::size_t(((b * S + p) * Hq + h) * Dv + d)]) /
                               vmax);
        const double got = lse[std::size_t((b * Hq + h) * n + i)],
                     want = expected_lse[std::size_t((b * Hq + h) * S + p)];
        if (std::isinf(want) || std::isinf(got))
          r.lse_infinite_agree = r.lse_infinite_agree && got == want;
        else
          r.lse_error = std::max(r.lse_error, std::fabs(got - want) / std::max(1.0, std::fabs(want)));
      }
  return r;
}

/// Largest |a - b| over the rows at `positions` of global b, relative to max |b|.
double relative_error(const std::vector<float>& local, const std::vector<double>& global,
                      index_t B, index_t S, index_t H, index_t X,
                      const std::vector<index_t>& positions) {
  double scale = 0, err = 0;
  for (double x : global) scale = std::max(scale, std::fabs(x));
  const index_t n = index_t(positions.size());
  for (index_t b = 0; b < B; ++b)
    for (index_t i = 0; i < n; ++i)
      for (index_t e = 0; e < H * X; ++e)
        err = std::max(err, std::fabs(double(local[std::size_t((b * n + i) * H * X + e)]) -
                                      global[std::size_t((b * S + positions[std::size_t(i)]) * H * X + e)]));
  return err / (scale > 0 ? scale : 1);
}

struct BackwardResult {
  double dq = 0, dk = 0, dv = 0, dslopes = 0;
  alibi::mpi::Stats stats;
};

/// The case's backward: this rank's slices of dq, dk, dv and the summed dslopes against the
/// float64 oracle's (given the oracle's out and lse, and the same dout).
BackwardResult run_backward(const Case& c) {
  const int me = world_rank();
  index_t S = 0;
  for (index_t n : c.lengths) S += n;
  const index_t B = c.batch, Hq = c.heads_q, Hkv = c.heads_kv, D = c.head_dim, Dv = c.value_dim;
  const std::vector<float> q = uniform(std::size_t(B * S * Hq * D), 1, c.amplitude),
                           k = uniform(std::size_t(B * S * Hkv * D), 2, c.amplitude),
                           v = uniform(std::size_t(B * S * Hkv * Dv), 3, 1.0f),
                           dout = uniform(std::size_t(B * S * Hq * Dv), 4, 1.0f);
  std::vector<double> qd(q.begin(), q.end()), kd(k.begin(), k.end()), vd(v.begin(), v.end()),
      doutd(dout.begin(), dout.end());
  std::vector<double> outd(std::size_t(B * S * Hq * Dv)), gq(qd.size()), gk(kd.size()),
      gv(vd.size());
  std::vector<float> lse(std::size_t(B * Hq * S));
  const std::size_t slope_count = c.params.slopes.empty() ? std::size_t(Hq) : c.params.slopes.size();
  std::vector<float> gm(slope_count);
  const auto view = [](std::vector<double>& x, index_t b, index_t s, index_t h, index_t d) {
    return alibi::make_view(x.data(), b, s, h, d);
  };
  alibi::reference::attention<double>(view(qd, B, S, Hq, D), view(kd, B, S, Hkv, D),
                                      view(vd, B, S, Hkv, Dv), view(outd, B, S, Hq, Dv), c.params,
                                      lse.data());
  alibi::reference::attention_backward<double>(
      view(qd, B, S, Hq, D), view(kd, B, S, Hkv, D), view(vd, B, S, Hkv, Dv),
      view(outd, B, S, Hq, Dv), view(doutd, B, S, Hq, Dv), lse.data(), view(gq, B, S, Hq, D),
      view(gk, B, S, Hkv, D), view(gv, B, S, Hkv, Dv), c.params, gm.data());

  const std::vector<index_t> pos = positions_of(c.lengths, me, c.zigzag);
  const index_t n = index_t(pos.size());
  const std::vector<float> outf(outd.begin(), outd.end());
  const std::vector<float> lq = gather_rows(q, B, S, Hq, D, pos),
                           lk = gather_rows(k, B, S, Hkv, D, pos),
                           lv = gather_rows(v, B, S, Hkv, Dv, pos),
                           lout = gather_rows(outf, B, S, Hq, Dv, pos),
                           ldout = gather_rows(dout, B, S, Hq, Dv, pos);
  std::vector<float> llse(std::size_t(B * Hq * n));
  for (index_t bh = 0; bh < B * Hq; ++bh)
    for (index_t i = 0; i < n; ++i)
      llse[std::size_t(bh * n + i)] = lse[std::size_t(bh * S + pos[std::size_t(i)])];
  std::vector<float> dq(lq.size()), dk(lk.size()), dv(lv.size()), dm(slope_count);
  BackwardResult r;
  alibi::mpi::attention_backward<float>(
      MPI_COMM_WORLD, alibi::make_view(lq.data(), B, n, Hq, D),
      alibi::make_view(lk.data(), B, n, Hkv, D), alibi::make_view(lv.data(), B, n, Hkv, Dv),
      alibi::make_view(lout.data(), B, n, Hq, Dv), alibi::make_view(ldout.data(), B, n, Hq, Dv),
      llse.data(), alibi::make_view(dq.data(), B, n, Hq, D),
      alibi::make_view(dk.data(), B, n, Hkv, D), alibi::make_view(dv.data(), B, n, Hkv, Dv),
      c.params, dm.data(), &r.stats,
      c.zigzag ? alibi::mpi::Layout::zigzag : alibi::mpi::Layout::contiguous);
  r.dq = relative_error(dq, gq, B, S, Hq, D, pos);
  r.dk = relative_error(dk, gk, B, S, Hkv, D, pos);
  r.dv = relative_error(dv, gv, B, S, Hkv, Dv, pos);
  double scale = 0;
  for (float x : gm) scale = std::max(scale, double(std::fabs(x)));
  for (std::size_t i = 0; i < gm.size(); ++i)
    r.dslopes = std::max(r.dslopes, std::fabs(double(dm[i]) - double(gm[i])) / scale);
  return r;
}

std::vector<index_t> equal_lengths(index_t each) {
  return std::vector<index_t>(std::size_t(world_size()), each);
}
/// Lengths that differ per rank, rank 1 empty (when there is a rank 1).
std::vector<index_t> uneven_lengths() {
  std::vector<index_t> n;
  for (int r = 0; r < world_size(); ++r) n.push_back(r == 1 ? 0 : 37 + 29 * r);
  return n;
}

void check_case(const Case& c) {
  INFO(c.name << " on " << world_size() << " ranks, rank " << world_rank());
  const Result r = run_forward(c);
  CHECK(r.out_error <= 1e-5);
  CHECK(r.lse_error <= 1e-5);
  CHECK(r.lse_infinite_agree);
}

}  // namespace

TEST_CASE("mpi::attention matches the whole sequence's attention", "[mpi]") {
  std::vector<Case> cases;
  for (bool causal : {true, false})
    for (float tolerance : {0x1p-24f, 0.0f})
      for (bool zigzag : {false, true}) {
        Case c;
        c.name = std::string(causal ? "causal" : "bidirectional") +
                 (tolerance > 0 ? ", skip on" : ", skip off") + (zigzag ? ", zigzag" : "");
        c.params.causal = causal;
        c.params.tail_tolerance = tolerance;
        c.zigzag = zigzag;
        c.lengths = equal_lengths(70);
        cases.push_back(c);

        c.name += ", uneven and empty slices, GQA 4/2, Dv 5, B 2";
        c.lengths = uneven_lengths();
        c.batch = 2;
        c.heads_q = 4;
        c.heads_kv = 2;
        c.value_dim = 5;
        cases.push_back(c);

        c.name += ", window (23, 9), per-(batch, head) slopes, MQA";
        c.heads_kv = 1;
        c.params.window_left = 23;
        c.params.window_right = 9;
        c.params.slopes = {0.5f, 0.25f, 0.0f, 1.0f / 64, 0.125f, 1.0f, 1.0f / 256, 0.75f};
        cases.push_back(c);

        c.name += ", sinks";
        c.params.sink_logits = {0.5f, -1.0f, 2.0f, 0.0f};
        cases.push_back(c);
      }
  for (const Case& c : cases) check_case(c);
}

TEST_CASE("mpi::attention leaves out the blocks the tail bound excludes", "[mpi]") {
  // Steep slopes: each row reaches a few dozen keys, so far slices need not travel.
  Case c;
  c.heads_q = c.heads_kv = 2;
  c.head_dim = c.value_dim = 8;
  c.params.slopes = {0.5f, 2.0f};
  c.lengths = equal_lengths(200);
  for (bool causal : {true, false}) {
    c.params.causal = causal;
    c.params.tail_tolerance = 0;
    c.name = causal ? "causal, skip off" : "bidirectional, skip off";
    INFO(c.name);
    const Result off = run_forward(c);
    c.params.tail_tolerance = 0x1p-24f;
    c.name = causal ? "causal, skip on" : "bidirectional, skip on";
    const Result on = run_forward(c);
    CHECK(off.out_error <= 1e-5);
    CHECK(on.out_error <= 1e-5);
    CHECK(off.stats.blocks_skipped == 0);
    std::int64_t moved[4] = {off.stats.bytes_sent, on.stats.bytes_sent, on.stats.blocks_skipped,
                             off.stats.bytes_received};
    std::int64_t total[4];
    MPI_Allreduce(moved, total, 4, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
    CHECK(total[3] == total[0]);  // every byte sent is received
    if (world_size() > 1) {
      CHECK(total[0] > 0);
      // Only the neighbours' near ends travel: 200 keys each way would be a whole slice.
      CHECK(total[1] * 2 < total[0]);
      if (world_size() > 2) CHECK(total[2] > 0);
    }
    // The backward leaves out the same blocks, and its gradients still match.
    const BackwardResult back = run_backward(c);
    CHECK(back.dq <= 1e-5);
    CHECK(back.dk <= 1e-5);
    CHECK(back.dv <= 1e-5);
    CHECK(back.dslopes <= 1e-5);
    std::int64_t skipped = 0;
    MPI_Allreduce(&back.stats.blocks_skipped, &skipped, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
    if (world_size() > 2) CHECK(skipped > 0);
  }
}

TEST_CASE("mpi::attention throws on every rank when ranks disagree or one is wrong", "[mpi]") {
  const int P = world_size(), me = world_rank(), last = P - 1;
  const index_t n = 9, H = 2, D = 4;
  std::vector<float> q(std::size_t(2 * n * H * D), 0.5f), k = q, v = q, out(q.size());
  const auto call = [&](index_t batch, const alibi::Params& p, index_t out_dim) {
    alibi::mpi::attention<float>(MPI_COMM_WORLD, alibi::make_view(q.data(), batch, n, H, D),
                                 alibi::make_view(k.data(), batch, n, H, D),
                                 alibi::make_view(v.data(), batch, n, H, D),
                                 alibi::make_view(out.data(), batch, n, H, out_dim), p);
  };
  // A wrong out shape on the last rank: every rank throws, naming it.
  CHECK_THROWS_WITH(call(1, {}, me == last ? D - 1 : D),
                    Catch::Contains("rank " + std::to_string(last)) && Catch::Contains("out"));
  alibi::Params offset;
  if (me == last) offset.query_offset = 3;
  CHECK_THROWS_WITH(call(1, offset, D), Catch::Contains("query_offset"));
  if (P > 1) {
    CHECK_THROWS_WITH(call(me == last ? 2 : 1, {}, D), Catch::Contains("disagree on the batch"));
    alibi::Params slopes;
    slopes.slopes = {0.5f, me == last ? 0.3f : 0.25f};
    CHECK_THROWS_WITH(call(1, slopes, D), Catch::Contains("disagree on params.slopes"));
    alibi::Params tolerance;
    tolerance.tail_tolerance = me == last ? 0.0f : 1e-6f;
    CHECK_THROWS_AS(call(1, tolerance, D), std::invalid_argument);
  }
  // The communicator is still usable: a good call after the bad ones works.
  CHECK_NOTHROW(call(1, {}, D));
}

TEST_CASE("mpi::attention_backward matches the whole sequence's gradients", "[mpi]") {
  for (bool causal : {true, false})
    for (float tolerance : {0x1p-24f, 0.0f})
      for (bool zigzag : {false, true}) {
        Case c;
        c.params.causal = causal;
        c.params.tail_tolerance = tolerance;
        c.zigzag = zigzag;
        c.lengths = uneven_lengths();
        c.batch = 2;
        c.heads_q = 4;
        c.heads_kv = 2;
        c.value_dim = 5;
        c.params.slopes = {0.5f, 0.25f, 2.0f, 1.0f / 64, 0.125f, 1.0f, 1.0f / 256, 0.75f};
        if (!causal) c.params.window_left = 40;
        INFO((causal ? "causal" : "bidirectional, window left 40")
             << (tolerance > 0 ? ", skip on" : ", skip off") << (zigzag ? ", zigzag" : "")
             << " on " << world_size() << " ranks, rank " << world_rank());
        const BackwardResult r = run_backward(c);
        CHECK(r.dq <= 1e-5);
        CHECK(r.dk <= 1e-5);
        CHECK(r.dv <= 1e-5);
        CHECK(r.dslopes <= 1e-5);
      }
}

TEST_CASE("mpi::decode merges the ranks' pieces in a fixed order", "[mpi]") {
  const int P = world_size(), me = world_rank();
  const index_t piece = alibi::mpi::decode_piece, total = 4 * piece;
  const index_t B = 2, Hq = 2, Hkv = 1, D = 8;
  const std::vector<float> k = uniform(std::size_t(B * total * Hkv * D), 12, 1.0f),
                           v = uniform(std::size_t(B * total * Hkv * D), 13, 1.0f);
  std::vector<double> kd(k.begin(), k.end()), vd(v.begin(), v.end());
  double vmax = 0;
  for (float x : v) vmax = std::max(vmax, double(std::fabs(x)));
  // Rank boundaries on whole pieces (4 pieces over P ranks), then anywhere (one rank empty).
  std::vector<std::vector<index_t>> splits = {{4}, {2, 2}, {1, 2, 1}, {1, 1, 1, 1}};
  std::vector<index_t> aligned = splits[std::size_t(P - 1)], ragged;
  for (index_t& n : aligned) n *= piece;
  for (int r = 0; r < P; ++r) ragged.push_back(r == P - 1 ? 0 : total / P + 777 * (r % 2));
  index_t sum = 0;
  for (int r = 0; r + 1 < P; ++r) sum += ragged[std::size_t(r)];
  ragged[std::size_t(P - 1)] = total - sum;
  if (P > 2) std::swap(ragged[1], ragged[std::size_t(P - 1)]);  // an empty rank in the middle

  for (index_t Sq : {1, 3})
    for (bool causal : {true, false})
      for (const auto* lengths : {&aligned, &ragged}) {
        INFO("Sq " << Sq << (Sq == 3 ? " with sinks" : "") << (causal ? ", causal" : ", bidirectional")
                   << (lengths == &aligned ? ", aligned" : ", ragged") << " on " << P
                   << " ranks, rank " << me);
        alibi::Params params;
        params.causal = causal;
        if (Sq == 3) params.sink_logits = {1.0f, -0.5f};
        const std::vector<float> q = uniform(std::size_t(B * Sq * Hq * D), 11 + std::uint32_t(Sq), 1.0f);
        std::vector<double> qd(q.begin(), q.end()), expected(std::size_t(B * Sq * Hq * D));
        alibi::reference::attention<double>(alibi::make_view(qd.data(), B, Sq, Hq, D),
                                            alibi::make_view(kd.data(), B, total, Hkv, D),
                                            alibi::make_view(vd.data(), B, total, Hkv, D),
                                            alibi::make_view(expected.data(), B, Sq, Hq, D),
                                            params);
        index_t begin = 0;
        for (int r = 0; r < me; ++r) begin += (*lengths)[std::size_t(r)];
        const index_t n = (*lengths)[std::size_t(me)];
        std::vector<index_t> pos;
        for (index_t i = 0; i < n; ++i) pos.push_back(begin + i);
        const std::vector<float> lk = gather_rows(k, B, total, Hkv, D, pos),
                                 lv = gather_rows(v, B, total, Hkv, D, pos);
        // Other ranks' q is not read: pass garbage of the right shape there.
        const std::vector<float> my_q = me == 0 ? q : std::vector<float>(q.size(), 99.0f);
        std::vector<float> out(expected.size()), lse(std::size_t(B * Hq * Sq));
        alibi::mpi::decode<float>(MPI_COMM_WORLD, alibi::make_view(my_q.data(), B, Sq, Hq, D),
                                  alibi::make_view(lk.data(), B, n, Hkv, D),
                                  alibi::make_view(lv.data(), B, n, Hkv, D),
                                  alibi::make_view(out.data(), B, Sq, Hq, D), params, lse.data());
        double err = 0;
        for (std::size_t i = 0; i < out.size(); ++i)
          err = std::max(err, std::fabs(double(out[i]) - expected[i]) / vmax);
        CHECK(err <= 1e-5);
        if (lengths == &aligned) {
          // One rank holding the whole cache: the same pieces, the same merge, the same bits.
          std::vector<float> alone(out.size()), alone_lse(lse.size());
          alibi::mpi::decode<float>(MPI_COMM_SELF, alibi::make_view(q.data(), B, Sq, Hq, D),
                                    alibi::make_view(k.data(), B, total, Hkv, D),
                                    alibi::make_view(v.data(), B, total, Hkv, D),
                                    alibi::make_view(alone.data(), B, Sq, Hq, D), params,
                                    alone_lse.data());
          CHECK(std::equal(out.begin(), out.end(), alone.begin()));
          CHECK(std::equal(lse.begin(), lse.end(), alone_lse.begin()));
        }
      }
}

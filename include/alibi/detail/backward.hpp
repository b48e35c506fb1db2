#pragma once
// The fused backward (FlashAttention-2's algorithm, without atomics). P is recomputed per tile
// from the forward's lse, dS = P (dP - D) with D = rowsum(dout out). Two passes, each task the
// sole writer of what it produces, so the result is the same for any thread count:
//   keys pass:    a task is one key tile of one (batch, kv head); it walks the query blocks that
//                 can attend it and accumulates dk = scale dSᵀ q and dv = Pᵀ dout. A worker
//                 keeps the blocks of its (batch, kv head) packed: its next task mostly walks
//                 the same ones, and repacking them per key tile cost a quarter of the pass;
//   queries pass: a task is a forward task (a block of query rows); it walks its key tiles and
//                 accumulates dq = scale dS k and the rows' slope gradients sum dS (-|p - t|).
// Every product is a register-blocked micro-tile (micro_kernel.hpp); P and dS are made in the
// products' epilogues. Extra memory is O(threads x (tile + seq_q x group x head dims)).

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <type_traits>
#include <vector>

#include <Eigen/Core>

#include "backward_rows.hpp"
#include "forward.hpp"
#include "geometry.hpp"
#include "kernel_traits.hpp"
#include "micro_kernel.hpp"
#include "numeric.hpp"
#include "packet_math.hpp"
#include "parallel.hpp"
#include "scratch.hpp"
#include "tile_softmax.hpp"

namespace alibi {
namespace detail {

/// What both passes share: a packed block of query rows (backward_rows.hpp), and key and value
/// tiles as rows of whole packets.
template <class T>
class BackwardBlock {
 protected:
  using Acc = accum_t<T>;
  using Traits = kernel_traits<Acc>;
  using Packet = typename Traits::Packet;
  using Rows = BackwardRows<T>;
  static constexpr index_t W = Traits::width, KB = Traits::key_block;
  static constexpr int MR = Traits::micro_rows, NP = Traits::micro_packets;

  /// `slots`: the packed blocks kept, 1 for a pass that packs each block once, tasks.blocks for
  /// one that reuses each block of a (batch, kv head) across its key tiles.
  BackwardBlock(const Geometry& g, const ForwardTasks& tasks, const BackwardViews<T>& x,
                index_t slots = 1)
      : g_(g),
        tasks_(tasks),
        x_(x),
        capacity_(tasks.rows),
        dim_(round_up(g.head_dim, W)),
        value_dim_(round_up(g.value_dim, W)),
        keys_(std::size_t(KB * dim_), Acc(0)),
        values_(std::size_t(KB * value_dim_), Acc(0)),
        probs_(std::size_t(KB * (capacity_ + Traits::line)), Acc(0)),
        grads_(std::size_t(KB * (capacity_ + Traits::line)), Acc(0)),
        slope_grad_(std::size_t(capacity_)),
        packed_(std::size_t(slots)) {}

  /// Rows of query block `block` of (b, kv), packed into their slot unless it holds them: returns
  /// their number and the keys any can attend.
  KeyRange load_block(index_t b, index_t kv, index_t block) {
    auto& slot = packed_[std::size_t(block) % packed_.size()];
    if (!slot) slot = std::make_unique<Rows>(g_, capacity_);
    slot->pack(g_, tasks_, x_, b, kv, block);
    block_ = slot.get();
    rows_ = block_->rows;
    stride_ = block_->stride;
    std::fill(slope_grad_.begin(), slope_grad_.end(), Acc(0));
    return block_->span;
  }

  /// Keys and values [t0, t0 + cols) of kv head `kv` as rows of whole packets, zero beyond cols
  /// up to a whole micro-tile: in place when they already are, else copied.
  StridedOperand<Acc> key_rows(index_t b, index_t kv, index_t t0, index_t cols) {
    return rows_of(x_.k, g_.head_dim, dim_, keys_, b, kv, t0, cols);
  }
  StridedOperand<Acc> value_rows(index_t b, index_t kv, index_t t0, index_t cols) {
    return rows_of(x_.v, g_.value_dim, value_dim_, values_, b, kv, t0, cols);
  }

  /// P for keys [t0, t0 + cols) and the block's rows, then dS: the two products with their
  /// finishing epilogues, over the columns each group of rows can attend (all columns of the
  /// tile when `whole`, for products that read every column).
  void probabilities_and_grads(index_t t0, index_t cols, StridedOperand<Acc> keys,
                               StridedOperand<Acc> values, bool whole, bool slope_grads) {
    block_->softmax.prepare(rows_, t0, cols, g_.key_position(t0));
    const index_t packets = (rows_ + W - 1) / W;
    for (index_t j0 = 0; j0 < packets; j0 += NP) {
      const index_t n = std::min<index_t>(NP, packets - j0);
      KeyRange columns = whole ? KeyRange{0, cols} : block_->softmax.columns(j0 * W, n * W);
      for (index_t c0 = columns.begin / MR * MR; c0 < columns.end; c0 += MR) {
        micro_tile_columns<Packet, MR, NP, false>(
            n, StridedOperand<Acc>{keys.data + c0 * keys.row_stride, keys.row_stride, 1},
            block_->queries_t.data() + j0 * W, stride_, g_.head_dim,
            probs_.data() + c0 * stride_ + j0 * W, stride_, ProbabilityTile{this}, c0, j0);
        micro_tile_columns<Packet, MR, NP, false>(
            n, StridedOperand<Acc>{values.data + c0 * values.row_stride, values.row_stride, 1},
            block_->douts_t.data() + j0 * W, stride_, g_.value_dim,
            grads_.data() + c0 * stride_ + j0 * W, stride_, GradientTile{this, slope_grads}, c0,
            j0);
      }
    }
  }

  /// For keys [t0, t0 + cols): P over the columns each group of rows can attend, summed into
  /// sums[r] (the rows' sum of exp(logit - lse), 1 up to the rounding of lse).
  void logit_sums(index_t t0, index_t cols, StridedOperand<Acc> keys, double* max, double* sums) {
    block_->softmax.prepare(rows_, t0, cols, g_.key_position(t0));
    const index_t packets = (rows_ + W - 1) / W;
    for (index_t j0 = 0; j0 < packets; j0 += NP) {
      const index_t n = std::min<index_t>(NP, packets - j0);
      const KeyRange columns = block_->softmax.columns(j0 * W, n * W);
      const index_t c_begin = columns.begin / MR * MR;
      for (index_t c0 = c_begin; c0 < columns.end; c0 += MR)
        micro_tile_columns<Packet, MR, NP, false>(
            n, StridedOperand<Acc>{keys.data + c0 * keys.row_stride, keys.row_stride, 1},
            block_->queries_t.data() + j0 * W, stride_, g_.head_dim,
            probs_.data() + c0 * stride_ + j0 * W, stride_, ProbabilityTile{this, true}, c0, j0);
      // The online softmax in double, over the raw (offset) logits.
      for (index_t r = j0 * W; r < std::min(rows_, (j0 + n) * W); ++r)
        for (index_t c = c_begin; c < columns.end; ++c) {
          const double logit = double(probs_[c * stride_ + r]);
          if (logit == -std::numeric_limits<double>::infinity()) continue;
          if (std::isnan(logit) || logit > max[r]) {
            sums[r] = sums[r] * std::exp(max[r] - logit) + 1;
            max[r] = logit;
          } else {
            sums[r] += std::exp(logit - max[r]);
          }
        }
    }
  }

  /// Finishes scoresᵀ into Pᵀ: bias, mask, exp(logit - lse); or the logits only, when `raw`.
  struct ProbabilityTile {
    const BackwardBlock* block;
    bool raw = false;
    template <int MR_, int NP_>
    void operator()(Packet (&acc)[MR_][NP_], Acc* out, index_t out_stride, index_t key,
                    index_t packet) const {
      using namespace Eigen::internal;
      const auto& s = block->block_->softmax;
      for (int j = 0; j < NP_; ++j) {
        const index_t r0 = (packet + j) * W;
        const BiasMask<Acc> bias = s.bias_mask(r0);
        const Packet shift = pload<Packet>(&block->block_->shift[r0]);
        const bool masked = s.edge(r0);
        for (int i = 0; i < MR_; ++i) {
          const Packet logit = bias(acc[i][j], pset1<Packet>(Acc(key + i)), masked);
          pstore(out + i * out_stride + j * W, raw ? logit : exp_weight(psub(logit, shift)));
        }
      }
    }
  };

  /// Finishes dPᵀ into dSᵀ = Pᵀ (dPᵀ - D), and (queries pass) adds dS (-|p - t|) to each row's
  /// slope gradient.
  struct GradientTile {
    BackwardBlock* block;
    bool slope_grads;
    template <int MR_, int NP_>
    void operator()(Packet (&acc)[MR_][NP_], Acc* out, index_t out_stride, index_t key,
                    index_t packet) const {
      using namespace Eigen::internal;
      const Acc* probs = block->probs_.data() + key * out_stride + packet * W;
      for (int j = 0; j < NP_; ++j) {
        const index_t r0 = (packet + j) * W;
        const Packet row_dot = pload<Packet>(&block->block_->row_dot[r0]);
        const BiasMask<Acc> bias = block->block_->softmax.bias_mask(r0);
        Packet slope_grad = pset1<Packet>(Acc(0));
        for (int i = 0; i < MR_; ++i) {
          const Packet p = pload<Packet>(probs + i * out_stride + j * W);
          // Where P is 0 (masked), dS is 0 even if dP is not finite (a masked NaN value).
          const Packet ds = pselect(pcmp_eq(p, pset1<Packet>(Acc(0))), pset1<Packet>(Acc(0)),
                                    pmul(p, psub(acc[i][j], row_dot)));
          pstore(out + i * out_stride + j * W, ds);
          if (slope_grads)
            slope_grad = psub(slope_grad, pmul(ds, bias.distance(pset1<Packet>(Acc(key + i)))));
        }
        if (slope_grads)
          pstore(&block->slope_grad_[r0], padd(pload<Packet>(&block->slope_grad_[r0]), slope_grad));
      }
    }
  };

  const Geometry& g_;
  const ForwardTasks& tasks_;
  const BackwardViews<T>& x_;
  index_t capacity_, dim_, value_dim_;  // rows the buffers hold; head dims in whole packets
  index_t rows_ = 0, stride_ = 0;       // this block's rows, and its row stride
  scratch_vector<Acc> keys_, values_, probs_, grads_;
  // Per row: sum dS (-(|p - t| - |offset|)), the slope gradient with the bias offset taken out.
  // Leaving out |offset| sum dS is exact, since the dS of a row sum to 0 (P sums to 1 and
  // D = sum P dP); kept, it would multiply the rounding of out, in D, by the distance, and break
  // the gradient's invariance under a shift of all distances (measured: 10.54 at a gap of 0, 905
  // at 1e9).
  scratch_vector<Acc> slope_grad_;
  std::vector<std::unique_ptr<Rows>> packed_;  // by block, modulo the slots
  Rows* block_ = nullptr;                      // the block load_block chose

 private:
  StridedOperand<Acc> rows_of(const TensorView<const T>& x, index_t dim, index_t padded,
                              scratch_vector<Acc>& buffer, index_t b, index_t kv, index_t t0,
                              index_t cols) {
    if constexpr (std::is_same<T, Acc>::value) {
      if (x.strides[3] == 1 && dim == padded && cols % MR == 0)
        return {x.row(b, t0, kv), x.strides[1], 1};
    }
    for (index_t c = 0; c < cols; ++c)
      load_vector(x.row(b, t0 + c, kv), x.strides[3], dim, buffer.data() + c * padded);
    std::fill(buffer.begin() + cols * padded, buffer.begin() + round_up(cols, MR) * padded, Acc(0));
    return {buffer.data(), padded, 1};
  }
};

/// Keys pass: dk and dv of one key tile of one (batch, kv head).
template <class T>
class KeyTileWorker : BackwardBlock<T> {
  using Base = BackwardBlock<T>;
  using Base::KB;
  using Base::MR;
  using Base::NP;
  using Base::W;
  using typename Base::Acc;
  using typename Base::Packet;

 public:
  KeyTileWorker(const Geometry& g, const ForwardTasks& tasks, const BackwardViews<T>& x)
      : Base(g, tasks, x, tasks.blocks),
        dk_(std::size_t(KB * this->dim_)),
        dv_(std::size_t(KB * this->value_dim_)) {}

  void operator()(index_t task) {
    const Geometry& g = this->g_;
    const index_t tiles = (g.seq_k + KB - 1) / KB;
    const index_t pair = task / tiles, t0 = (task % tiles) * KB;
    const index_t b = pair / g.heads_kv, kv = pair % g.heads_kv;
    const index_t cols = std::min(KB, g.seq_k - t0);
    std::fill(dk_.begin(), dk_.end(), Acc(0));
    std::fill(dv_.begin(), dv_.end(), Acc(0));
    const StridedOperand<Acc> keys = this->key_rows(b, kv, t0, cols);
    const StridedOperand<Acc> values = this->value_rows(b, kv, t0, cols);
    const index_t covered = round_up(cols, MR);
    for (index_t block = 0; block < this->tasks_.blocks; ++block) {
      if (g.packed()) {  // only the blocks of the sequences this tile holds keys of
        const std::size_t seq = std::size_t(g.sequence_of(this->tasks_.block_begin(block)));
        if (g.cu_seqlens_k[seq + 1] <= t0 || g.cu_seqlens_k[seq] >= t0 + cols) continue;
      }
      const KeyRange span = this->load_block(b, kv, block);
      if (span.empty() || span.end <= t0 || span.begin >= t0 + cols) continue;
      // Every column of the tile: the products below read all of Pᵀ and dSᵀ.
      this->probabilities_and_grads(t0, cols, keys, values, true, false);
      const index_t depth = round_up(this->rows_, W);
      // dv += Pᵀ dout and dk += dSᵀ (scale q): keys by rows times rows by head dims.
      for (index_t j0 = 0; j0 < this->value_dim_ / W; j0 += NP)
        for (index_t c0 = 0; c0 < covered; c0 += MR)
          micro_tile_columns<Packet, MR, NP, true>(
              std::min<index_t>(NP, this->value_dim_ / W - j0),
              StridedOperand<Acc>{this->probs_.data() + c0 * this->stride_, this->stride_, 1},
              this->block_->douts.data() + j0 * W, this->value_dim_, depth,
              dv_.data() + c0 * this->value_dim_ + j0 * W, this->value_dim_, StoreTile{}, c0, j0);
      for (index_t j0 = 0; j0 < this->dim_ / W; j0 += NP)
        for (index_t c0 = 0; c0 < covered; c0 += MR)
          micro_tile_columns<Packet, MR, NP, true>(
              std::min<index_t>(NP, this->dim_ / W - j0),
              StridedOperand<Acc>{this->grads_.data() + c0 * this->stride_, this->stride_, 1},
              this->block_->queries.data() + j0 * W, this->dim_, depth,
              dk_.data() + c0 * this->dim_ + j0 * W, this->dim_, StoreTile{}, c0, j0);
    }
    for (index_t c = 0; c < cols; ++c) {
      T* dk = this->x_.dk.row(b, t0 + c, kv);
      T* dv = this->x_.dv.row(b, t0 + c, kv);
      for (index_t d = 0; d < g.head_dim; ++d)
        dk[d * this->x_.dk.strides[3]] = T(dk_[c * this->dim_ + d]);
      for (index_t d = 0; d < g.value_dim; ++d)
        dv[d * this->x_.dv.strides[3]] = T(dv_[c * this->value_dim_ + d]);
    }
  }

 private:
  scratch_vector<Acc> dk_, dv_;
};

/// Queries pass: dq of one block of query rows, and its rows' slope gradients into
/// slope_grads[task * group + head in group].
template <class T>
class QueryBlockWorker : BackwardBlock<T> {
  using Base = BackwardBlock<T>;
  using Base::KB;
  using Base::MR;
  using Base::NP;
  using Base::W;
  using typename Base::Acc;
  using typename Base::Packet;

 public:
  QueryBlockWorker(const Geometry& g, const ForwardTasks& tasks, const BackwardViews<T>& x,
                   std::vector<double>* slope_grads)
      : Base(g, tasks, x),
        dq_(std::size_t(this->capacity_ * this->dim_)),
        slope_grads_(slope_grads) {}

  void operator()(index_t task) {
    const Geometry& g = this->g_;
    const index_t pair = task / this->tasks_.blocks, block = task % this->tasks_.blocks;
    const index_t b = pair / g.heads_kv, kv = pair % g.heads_kv;
    const KeyRange span = this->load_block(b, kv, block);
    std::fill(dq_.begin(), dq_.end(), Acc(0));
    const index_t rows = this->rows_;
    for (index_t t0 = span.begin; t0 < span.end; t0 += KB) {
      const index_t cols = std::min(KB, span.end - t0);
      const StridedOperand<Acc> keys = this->key_rows(b, kv, t0, cols);
      const StridedOperand<Acc> values = this->value_rows(b, kv, t0, cols);
      this->probabilities_and_grads(t0, cols, keys, values, false, slope_grads_ != nullptr);
      // dq += dS (scale k): rows by keys (dS read out of dSᵀ) times keys by head dims, each
      // micro-tile of rows over the keys it can attend.
      for (index_t j0 = 0; j0 < this->dim_ / W; j0 += NP)
        for (index_t r0 = 0; r0 < rows; r0 += MR) {
          const KeyRange columns = this->block_->softmax.columns(r0, MR);
          if (columns.empty()) continue;
          micro_tile_columns<Packet, MR, NP, true>(
              std::min<index_t>(NP, this->dim_ / W - j0),
              StridedOperand<Acc>{this->grads_.data() + columns.begin * this->stride_ + r0, 1,
                                  this->stride_},
              keys.data + columns.begin * keys.row_stride + j0 * W, keys.row_stride,
              columns.end - columns.begin, dq_.data() + r0 * this->dim_ + j0 * W, this->dim_,
              StoreTile{}, r0, j0);
        }
    }
    const Acc scale = Acc(g.scale);
    for (index_t r = 0; r < rows; ++r) {
      T* dq = this->x_.dq.row(b, this->block_->queries_of[r], this->block_->heads_of[r]);
      for (index_t d = 0; d < g.head_dim; ++d)
        dq[d * this->x_.dq.strides[3]] = T(dq_[r * this->dim_ + d] * scale);
      if (slope_grads_ != nullptr)
        (*slope_grads_)[std::size_t(task * this->tasks_.group +
                                    this->block_->heads_of[r] % this->tasks_.group)] +=
            double(this->slope_grad_[r]) - offset_slope_grad(r);
    }
  }

 private:
  scratch_vector<Acc> dq_;
  std::vector<double>* slope_grads_;

  /// The part of row r's slope gradient that its bias offset carries, -|offset| sum dS: 0
  /// without a sink (the dS sum to 0), -|offset| D P_sink with one (P_sink from the row's lse
  /// relative to the offset, in double).
  double offset_slope_grad(index_t r) const {
    const Geometry& g = this->g_;
    if (!g.has_sinks() || r >= this->rows_) return 0;
    const double distance = double(std::abs(this->block_->softmax.offset(r)));
    const double lse = this->block_->lse[std::size_t(r)];
    if (distance == 0 || !std::isfinite(lse)) return 0;
    const double sink = double(g.sink_logits[std::size_t(this->block_->heads_of[r])]) +
                        double(this->block_->softmax.slope(r)) * distance;
    return distance * double(this->block_->row_dot[r]) * std::exp(sink - lse);
  }
};

/// Recomputes each row's lse in double, relative to its bias offset (so that it keeps its
/// digits however far the keys are): max + log(sum exp(logit - max)) over its offset logits.
template <class T>
class LseRefiner : BackwardBlock<T> {
  using Base = BackwardBlock<T>;
  using Base::KB;

 public:
  LseRefiner(const Geometry& g, const ForwardTasks& tasks, BackwardViews<T>& x)
      : Base(g, tasks, x),
        exact_(x.exact_lse),
        max_(std::size_t(this->capacity_)),
        sums_(std::size_t(this->capacity_)) {}

  void operator()(index_t task) {
    const Geometry& g = this->g_;
    const index_t pair = task / this->tasks_.blocks, block = task % this->tasks_.blocks;
    const index_t b = pair / g.heads_kv, kv = pair % g.heads_kv;
    const KeyRange span = this->load_block(b, kv, block);
    std::fill(max_.begin(), max_.end(), -std::numeric_limits<double>::infinity());
    std::fill(sums_.begin(), sums_.end(), 0.0);
    for (index_t t0 = span.begin; t0 < span.end; t0 += KB) {
      const index_t cols = std::min(KB, span.end - t0);
      this->logit_sums(t0, cols, this->key_rows(b, kv, t0, cols), max_.data(), sums_.data());
    }
    for (index_t r = 0; r < this->rows_; ++r) {
      const std::size_t rr = std::size_t(r);
      double lse = sums_[rr] > 0 || std::isnan(sums_[rr])
                       ? max_[rr] + std::log(sums_[rr])
                       : -std::numeric_limits<double>::infinity();
      // A learned sink is a term of the row's sum too, relative to the same offset.
      if (g.has_sinks())
        lse = fold_sink(lse, double(g.sink_logits[std::size_t(this->block_->heads_of[r])]) +
                                 double(this->block_->softmax.slope(r)) *
                                     double(std::abs(this->block_->softmax.offset(r))))
                  .lse;
      exact_[std::size_t((b * g.heads_q + this->block_->heads_of[r]) * g.seq_q +
                         this->block_->queries_of[r])] = lse;
    }
  }

 private:
  std::vector<double>& exact_;
  std::vector<double> max_, sums_;
};

/// dL/ds of each learned sink: its value is zero, so dS_sink = P_sink (0 - D) per row, with
/// P_sink = exp(s - lse) and D = rowsum(dout out); summed in double in row order.
template <class T>
void sink_gradients(const Geometry& g, const BackwardViews<T>& x, float* dsinks) {
  for (index_t h = 0; h < g.heads_q; ++h) {
    double total = 0;
    for (index_t b = 0; b < g.batch; ++b)
      for (index_t i = 0; i < g.seq_q; ++i) {
        const index_t row = (b * g.heads_q + h) * g.seq_q + i;
        // exact_lse is relative to the row's bias offset (LseRefiner): so is the sink here.
        double sink = double(g.sink_logits[std::size_t(h)]), lse = double(x.lse[row]);
        if (!x.exact_lse.empty()) {
          const index_t p = g.query_position(b, i);
          const index_t offset =
              g.bias_offset(p, g.query_keys(b, i), kernel_traits<accum_t<T>>::key_block);
          sink += double(g.slope(b, h)) * double(std::abs(offset));
          lse = x.exact_lse[std::size_t(row)];
        }
        const T* dout = x.dout.row(b, i, h);
        const T* out = x.out.row(b, i, h);
        double dot = 0;
        for (index_t d = 0; d < g.value_dim; ++d)
          dot += double(dout[d * x.dout.strides[3]]) * double(out[d * x.out.strides[3]]);
        // A row with no allowed key has out = 0: nothing flows to its sink.
        if (dot != 0) total -= std::exp(sink - lse) * dot;
      }
    dsinks[h] = float(total);
  }
}

template <class T>
void backward(const Geometry& g, BackwardViews<T> x, int threads, float* dslopes,
              float* dsinks = nullptr) {
  using Acc = accum_t<T>;
  const ForwardTasks tasks = ForwardTasks::make<Acc>(g);
  // The forward's lse is float: its rounding (2^-24 of |lse|) becomes the relative error of
  // every P. That is float round-off unless |lse| is large (keys far from their queries), and
  // never good enough in double. Then one more pass over the scores recomputes it, in double
  // and relative to each row's bias offset (at 1e12 positions even a double lse would lose it).
  const index_t rows = g.batch * g.heads_q * g.seq_q;
  const bool large_lse = std::any_of(
      x.lse, x.lse + rows, [](float l) { return std::isfinite(l) && std::fabs(l) > 64.0f; });
  if (std::is_same<Acc, double>::value || large_lse) {
    x.exact_lse.assign(std::size_t(rows), -std::numeric_limits<double>::infinity());
    parallel_tasks(tasks.count, threads, [&] { return LseRefiner<T>(g, tasks, x); });
  }
  const index_t tiles =
      (g.seq_k + kernel_traits<Acc>::key_block - 1) / kernel_traits<Acc>::key_block;
  parallel_tasks(g.batch * g.heads_kv * tiles, threads,
                 [&] { return KeyTileWorker<T>(g, tasks, x); });
  std::vector<double> slope_grads(dslopes != nullptr ? std::size_t(tasks.count * tasks.group) : 0,
                                  0.0);
  parallel_tasks(tasks.count, threads, [&] {
    return QueryBlockWorker<T>(g, tasks, x, dslopes != nullptr ? &slope_grads : nullptr);
  });
  if (dsinks != nullptr && g.has_sinks()) sink_gradients(g, x, dsinks);
  if (dslopes == nullptr) return;
  // Per (batch, head) in task order: the same sums whatever the thread count.
  std::vector<double> total(g.slopes.size(), 0.0);
  for (index_t task = 0; task < tasks.count; ++task) {
    const index_t pair = task / tasks.blocks, b = pair / g.heads_kv, kv = pair % g.heads_kv;
    for (index_t j = 0; j < tasks.group; ++j) {
      const index_t h = kv * tasks.group + j;
      const std::size_t slot = g.slope_index(b, h);
      total[slot] += slope_grads[std::size_t(task * tasks.group + j)];
    }
  }
  for (std::size_t j = 0; j < total.size(); ++j) dslopes[j] = float(total[j]);
}

}  // namespace detail
}  // namespace alibi

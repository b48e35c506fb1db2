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
// With a (batch, kv head) for every thread, one task per (batch, kv head) does both (PairWorker)
// and makes P and dS once instead of twice, with the same bits.
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

  index_t key_tiles() const { return (g_.seq_k + KB - 1) / KB; }

  /// Whether query block `block` of (b, kv) can attend keys [t0, t0 + cols); loads it if so.
  bool attends(index_t b, index_t kv, index_t block, index_t t0, index_t cols) {
    if (g_.packed()) {  // only the blocks of the sequences this tile holds keys of
      const std::size_t seq = std::size_t(g_.sequence_of(tasks_.block_begin(block)));
      if (g_.cu_seqlens_k[seq + 1] <= t0 || g_.cu_seqlens_k[seq] >= t0 + cols) return false;
    }
    const KeyRange span = load_block(b, kv, block);
    return !span.empty() && span.end > t0 && span.begin < t0 + cols;
  }

  /// dv += Pᵀ dout and dk += dSᵀ (scale q) for the tile's `cols` keys (after
  /// probabilities_and_grads): keys by rows times rows by head dims.
  void add_key_grads(index_t cols, Acc* dk, Acc* dv) {
    const index_t depth = round_up(rows_, W), covered = round_up(cols, MR);
    for (index_t j0 = 0; j0 < value_dim_ / W; j0 += NP)
      for (index_t c0 = 0; c0 < covered; c0 += MR)
        micro_tile_columns<Packet, MR, NP, true>(
            std::min<index_t>(NP, value_dim_ / W - j0),
            StridedOperand<Acc>{probs_.data() + c0 * stride_, stride_, 1},
            block_->douts.data() + j0 * W, value_dim_, depth, dv + c0 * value_dim_ + j0 * W,
            value_dim_, StoreTile{}, c0, j0);
    for (index_t j0 = 0; j0 < dim_ / W; j0 += NP)
      for (index_t c0 = 0; c0 < covered; c0 += MR)
        micro_tile_columns<Packet, MR, NP, true>(
            std::min<index_t>(NP, dim_ / W - j0),
            StridedOperand<Acc>{grads_.data() + c0 * stride_, stride_, 1},
            block_->queries.data() + j0 * W, dim_, depth, dk + c0 * dim_ + j0 * W, dim_,
            StoreTile{}, c0, j0);
  }

  void store_key_grads(index_t b, index_t kv, index_t t0, index_t cols, const Acc* dk,
                       const Acc* dv) {
    for (index_t c = 0; c < cols; ++c) {
      T* k = x_.dk.row(b, t0 + c, kv);
      T* v = x_.dv.row(b, t0 + c, kv);
      for (index_t d = 0; d < g_.head_dim; ++d) k[d * x_.dk.strides[3]] = T(dk[c * dim_ + d]);
      for (index_t d = 0; d < g_.value_dim; ++d)
        v[d * x_.dv.strides[3]] = T(dv[c * value_dim_ + d]);
    }
  }

  /// dq += dS (scale k) (after probabilities_and_grads): rows by keys (dS read out of dSᵀ)
  /// times keys by head dims, each micro-tile of rows over the keys it can attend.
  void add_query_grads(StridedOperand<Acc> keys, Acc* dq) {
    for (index_t j0 = 0; j0 < dim_ / W; j0 += NP)
      for (index_t r0 = 0; r0 < rows_; r0 += MR) {
        const KeyRange columns = block_->softmax.columns(r0, MR);
        if (columns.empty()) continue;
        micro_tile_columns<Packet, MR, NP, true>(
            std::min<index_t>(NP, dim_ / W - j0),
            StridedOperand<Acc>{grads_.data() + columns.begin * stride_ + r0, 1, stride_},
            keys.data + columns.begin * keys.row_stride + j0 * W, keys.row_stride,
            columns.end - columns.begin, dq + r0 * dim_ + j0 * W, dim_, StoreTile{}, r0, j0);
      }
  }

  /// The loaded block's dq, and its rows' slope gradients into slope_grads[task * group + head
  /// in group] (task: the block's index over all (batch, kv head)s).
  void store_query_grads(index_t b, index_t task, const Acc* dq, std::vector<double>* slope_grads) {
    const Acc scale = Acc(g_.scale);
    for (index_t r = 0; r < rows_; ++r) {
      T* q = x_.dq.row(b, block_->queries_of[r], block_->heads_of[r]);
      for (index_t d = 0; d < g_.head_dim; ++d)
        q[d * x_.dq.strides[3]] = T(dq[r * dim_ + d] * scale);
      if (slope_grads != nullptr)
        (*slope_grads)[std::size_t(task * tasks_.group + block_->heads_of[r] % tasks_.group)] +=
            double(block_->slope_grad[r]) - offset_slope_grad(r);
    }
  }

  /// The part of row r's slope gradient that its bias offset carries, -|offset| sum dS: 0
  /// without a sink (the dS sum to 0), -|offset| D P_sink with one (P_sink from the row's lse
  /// relative to the offset, in double).
  double offset_slope_grad(index_t r) const {
    if (!g_.has_sinks() || r >= rows_) return 0;
    const double distance = double(std::abs(block_->softmax.offset(r)));
    const double lse = block_->lse[std::size_t(r)];
    if (distance == 0 || !std::isfinite(lse)) return 0;
    const double sink = double(g_.sink_logits[std::size_t(block_->heads_of[r])]) +
                        double(block_->softmax.slope(r)) * distance;
    return distance * double(block_->row_dot[r]) * std::exp(sink - lse);
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
          pstore(&block->block_->slope_grad[r0],
                 padd(pload<Packet>(&block->block_->slope_grad[r0]), slope_grad));
      }
    }
  };

  const Geometry& g_;
  const ForwardTasks& tasks_;
  const BackwardViews<T>& x_;
  index_t capacity_, dim_, value_dim_;  // rows the buffers hold; head dims in whole packets
  index_t rows_ = 0, stride_ = 0;       // this block's rows, and its row stride
  scratch_vector<Acc> keys_, values_, probs_, grads_;
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
  using typename Base::Acc;

 public:
  KeyTileWorker(const Geometry& g, const ForwardTasks& tasks, const BackwardViews<T>& x)
      : Base(g, tasks, x, tasks.blocks),
        dk_(std::size_t(KB * this->dim_)),
        dv_(std::size_t(KB * this->value_dim_)) {}

  void operator()(index_t task) {
    const index_t tiles = this->key_tiles();
    const index_t pair = task / tiles, t0 = (task % tiles) * KB;
    const index_t b = pair / this->g_.heads_kv, kv = pair % this->g_.heads_kv;
    const index_t cols = std::min(KB, this->g_.seq_k - t0);
    std::fill(dk_.begin(), dk_.end(), Acc(0));
    std::fill(dv_.begin(), dv_.end(), Acc(0));
    const StridedOperand<Acc> keys = this->key_rows(b, kv, t0, cols);
    const StridedOperand<Acc> values = this->value_rows(b, kv, t0, cols);
    for (index_t block = 0; block < this->tasks_.blocks; ++block) {
      if (!this->attends(b, kv, block, t0, cols)) continue;
      // Every column of the tile: the products below read all of Pᵀ and dSᵀ.
      this->probabilities_and_grads(t0, cols, keys, values, true, false);
      this->add_key_grads(cols, dk_.data(), dv_.data());
    }
    this->store_key_grads(b, kv, t0, cols, dk_.data(), dv_.data());
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
  using typename Base::Acc;

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
    std::fill(this->block_->slope_grad.begin(), this->block_->slope_grad.end(), Acc(0));
    // The keys pass's tiles, so that PairWorker makes the very same products.
    for (index_t t0 = span.begin / KB * KB; t0 < span.end; t0 += KB) {
      const index_t cols = std::min(KB, g.seq_k - t0);
      const StridedOperand<Acc> keys = this->key_rows(b, kv, t0, cols);
      const StridedOperand<Acc> values = this->value_rows(b, kv, t0, cols);
      this->probabilities_and_grads(t0, cols, keys, values, false, slope_grads_ != nullptr);
      this->add_query_grads(keys, dq_.data());
    }
    this->store_query_grads(b, task, dq_.data(), slope_grads_);
  }

 private:
  scratch_vector<Acc> dq_;
  std::vector<double>* slope_grads_;
};

/// Both passes in one task per (batch, kv head), when there are enough of them for every
/// thread: per key tile the keys pass's products, and from the same P and dS each query block's
/// dq and slope gradients, which the queries pass would recompute. The queries pass walks the
/// same tiles and sums the same products in the same order, so the bits are the same either way
/// (in the columns only this worker computes, dS is 0).
template <class T>
class PairWorker : BackwardBlock<T> {
  using Base = BackwardBlock<T>;
  using Base::KB;
  using typename Base::Acc;

 public:
  PairWorker(const Geometry& g, const ForwardTasks& tasks, const BackwardViews<T>& x,
             std::vector<double>* slope_grads)
      : Base(g, tasks, x, tasks.blocks),
        dk_(std::size_t(KB * this->dim_)),
        dv_(std::size_t(KB * this->value_dim_)),
        dq_(std::size_t(tasks.blocks * this->capacity_ * this->dim_)),
        slope_grads_(slope_grads) {}

  void operator()(index_t pair) {
    const Geometry& g = this->g_;
    const index_t b = pair / g.heads_kv, kv = pair % g.heads_kv, blocks = this->tasks_.blocks;
    const std::size_t block_dq = std::size_t(this->capacity_ * this->dim_);
    std::fill(dq_.begin(), dq_.end(), Acc(0));
    for (index_t block = 0; block < blocks; ++block) {
      this->load_block(b, kv, block);
      std::fill(this->block_->slope_grad.begin(), this->block_->slope_grad.end(), Acc(0));
    }
    for (index_t t0 = 0; t0 < g.seq_k; t0 += KB) {
      const index_t cols = std::min(KB, g.seq_k - t0);
      std::fill(dk_.begin(), dk_.end(), Acc(0));
      std::fill(dv_.begin(), dv_.end(), Acc(0));
      const StridedOperand<Acc> keys = this->key_rows(b, kv, t0, cols);
      const StridedOperand<Acc> values = this->value_rows(b, kv, t0, cols);
      for (index_t block = 0; block < blocks; ++block) {
        if (!this->attends(b, kv, block, t0, cols)) continue;
        this->probabilities_and_grads(t0, cols, keys, values, true, slope_grads_ != nullptr);
        this->add_key_grads(cols, dk_.data(), dv_.data());
        this->add_query_grads(keys, dq_.data() + std::size_t(block) * block_dq);
      }
      this->store_key_grads(b, kv, t0, cols, dk_.data(), dv_.data());
    }
    for (index_t block = 0; block < blocks; ++block) {
      this->load_block(b, kv, block);
      this->store_query_grads(b, pair * blocks + block, dq_.data() + std::size_t(block) * block_dq,
                              slope_grads_);
    }
  }

 private:
  scratch_vector<Acc> dk_, dv_, dq_;  // dq: per query block
  std::vector<double>* slope_grads_;
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
  const index_t pairs = g.batch * g.heads_kv;
  const index_t tiles =
      (g.seq_k + kernel_traits<Acc>::key_block - 1) / kernel_traits<Acc>::key_block;
  std::vector<double> slope_grads(dslopes != nullptr ? std::size_t(tasks.count * tasks.group) : 0,
                                  0.0);
  std::vector<double>* grads = dslopes != nullptr ? &slope_grads : nullptr;
  // Key tiles as tasks only to keep every thread busy: both ways give the same bits.
  if (pairs >= thread_count(threads, pairs * tiles)) {
    parallel_tasks(pairs, threads, [&] { return PairWorker<T>(g, tasks, x, grads); });
  } else {
    parallel_tasks(pairs * tiles, threads, [&] { return KeyTileWorker<T>(g, tasks, x); });
    parallel_tasks(tasks.count, threads, [&] { return QueryBlockWorker<T>(g, tasks, x, grads); });
  }
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

#pragma once
// Checks of a backward call: the forward's, plus the gradients' and out/dout's shapes, null lse,
// and gradients that share an element with each other or an input (overlap.hpp).

#include <algorithm>
#include <string>
#include <vector>

#include "validate.hpp"

namespace alibi {
namespace detail {

template <class T>
Geometry validate_backward(const char* fn, const TensorView<const T>& q,
                           const TensorView<const T>& k, const TensorView<const T>& v,
                           const TensorView<const T>& out, const TensorView<const T>& dout,
                           const float* lse, const TensorView<T>& dq, const TensorView<T>& dk,
                           const TensorView<T>& dv, const Params& params) {
  // The forward's shape and params checks; out is an input here.
  const Geometry g = forward_geometry(fn, q, k, v, out, params);
  const struct {
    const char* name;
    const TensorView<const T>& view;
    const std::array<index_t, 4>& shape;
  } pairs[] = {{"dout", dout, out.shape}};
  for (const auto& p : pairs) {
    check_view(fn, p.name, p.view);
    if (p.view.shape != p.shape)
      fail(fn, std::string(p.name) + " has shape " + shape_string(p.view.shape) + " but out has " +
                   shape_string(out.shape));
  }
  const struct {
    const char* name;
    const TensorView<T>& view;
    const TensorView<const T>& like;
    const char* like_name;
  } grads[] = {{"dq", dq, q, "q"}, {"dk", dk, k, "k"}, {"dv", dv, v, "v"}};
  for (const auto& grad : grads) {
    check_view(fn, grad.name, grad.view);
    if (grad.view.shape != grad.like.shape)
      fail(fn, std::string(grad.name) + " has shape " + shape_string(grad.view.shape) + " but " +
                   grad.like_name + " has " + shape_string(grad.like.shape));
    check_distinct_elements(fn, grad.name, grad.view);
  }
  const index_t rows = g.batch * g.heads_q * g.seq_q;
  if (lse == nullptr && rows > 0)
    fail(fn, "lse is null: the backward needs the forward's lse [" + std::to_string(g.batch) +
                 ", " + std::to_string(g.heads_q) + ", " + std::to_string(g.seq_q) + "]");
  // Element by element (overlap.hpp): dq, dk and dv may interleave in one packed gradient.
  const ByteLattice inputs[] = {
      lattice_of(q),    lattice_of(k),
      lattice_of(v),    lattice_of(out),
      lattice_of(dout), lattice_of_array(lse, lse == nullptr ? 0 : rows, index_t(sizeof(float)))};
  const char* input_names[] = {"q", "k", "v", "out", "dout", "lse"};
  const ByteLattice outputs[] = {lattice_of(dq), lattice_of(dk), lattice_of(dv)};
  const char* output_names[] = {"dq", "dk", "dv"};
  for (int o = 0; o < 3; ++o) {
    for (int i = 0; i < 6; ++i)
      if (share_bytes(outputs[o], inputs[i]))
        fail(fn, std::string(output_names[o]) + " overlaps " + input_names[i] + " in memory");
  }
  for (int o = 0; o < 3; ++o)
    for (int p = o + 1; p < 3; ++p)
      if (share_bytes(outputs[o], outputs[p]))
        fail(fn, std::string(output_names[o]) + " overlaps " + output_names[p] + " in memory");
  return g;
}

}  // namespace detail
}  // namespace alibi

#pragma once
// Checks of a backward call: the forward's, plus the gradients' and out/dout's shapes, null lse,
// and gradients that overlap each other or an input.

#include <algorithm>
#include <string>
#include <vector>

#include "validate.hpp"

namespace alibi {
namespace detail {

/// Whether two views share an element. Interleaved views (dq, dk, dv inside one packed QKV
/// gradient) have overlapping spans but distinct elements: then every address is compared,
/// O(n log n), small next to the backward itself.
template <class T>
bool share_elements(const char* fn, const TensorView<T>& a, const TensorView<T>& b) {
  if (!byte_span(fn, "a", a).overlaps(byte_span(fn, "b", b))) return false;
  std::vector<const T*> addresses;
  addresses.reserve(std::size_t(a.size()));
  for (index_t i = 0; i < a.batch(); ++i)
    for (index_t s = 0; s < a.seq(); ++s)
      for (index_t h = 0; h < a.heads(); ++h)
        for (index_t d = 0; d < a.head_dim(); ++d) addresses.push_back(&a(i, s, h, d));
  std::sort(addresses.begin(), addresses.end());
  for (index_t i = 0; i < b.batch(); ++i)
    for (index_t s = 0; s < b.seq(); ++s)
      for (index_t h = 0; h < b.heads(); ++h)
        for (index_t d = 0; d < b.head_dim(); ++d)
          if (std::binary_search(addresses.begin(), addresses.end(), &b(i, s, h, d))) return true;
  return false;
}

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
  const ByteSpan inputs[] = {byte_span(fn, "q", q),
                             byte_span(fn, "k", k),
                             byte_span(fn, "v", v),
                             byte_span(fn, "out", out),
                             byte_span(fn, "dout", dout),
                             lse == nullptr
                                 ? ByteSpan{}
                                 : ByteSpan{reinterpret_cast<std::uintptr_t>(lse),
                                            reinterpret_cast<std::uintptr_t>(lse + rows)}};
  const char* input_names[] = {"q", "k", "v", "out", "dout", "lse"};
  const ByteSpan outputs[] = {byte_span(fn, "dq", dq), byte_span(fn, "dk", dk),
                              byte_span(fn, "dv", dv)};
  const char* output_names[] = {"dq", "dk", "dv"};
  for (int o = 0; o < 3; ++o) {
    for (int i = 0; i < 6; ++i)
      if (outputs[o].overlaps(inputs[i]))
        fail(fn, std::string(output_names[o]) + " overlaps " + input_names[i] + " in memory");
  }
  const TensorView<T>* gradients[] = {&dq, &dk, &dv};
  for (int o = 0; o < 3; ++o)
    for (int p = o + 1; p < 3; ++p)
      if (share_elements(fn, *gradients[o], *gradients[p]))
        fail(fn, std::string(output_names[o]) + " overlaps " + output_names[p] + " in memory");
  return g;
}

}  // namespace detail
}  // namespace alibi

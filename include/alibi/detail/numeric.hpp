#pragma once
// Element types: storage may be float, double, Eigen::half or Eigen::bfloat16; arithmetic is in
// float, or double for double.

#include <type_traits>

#include <Eigen/Core>

namespace alibi {
namespace detail {

template <class T>
struct is_element : std::integral_constant<bool, std::is_same<T, float>::value ||
                                                     std::is_same<T, double>::value ||
                                                     std::is_same<T, Eigen::half>::value ||
                                                     std::is_same<T, Eigen::bfloat16>::value> {};

/// The type every product and sum of a call with storage T is computed in.
template <class T>
using accum_t = std::conditional_t<std::is_same<T, double>::value, double, float>;

/// `nondeduced<T>` is T, but a parameter of that type takes no part in template deduction: the
/// public functions deduce T from the output view and convert mutable input views to const.
template <class T>
struct type_identity {
  using type = T;
};
template <class T>
using nondeduced = typename type_identity<T>::type;

}  // namespace detail
}  // namespace alibi

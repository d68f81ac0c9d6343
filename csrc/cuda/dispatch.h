#pragma once
// From run-time values to compile-time ones, for the launchers of both CUDA paths and
// their host emulations: a DType to its storage type, a flag to a bool template argument.

#include <type_traits>

#include "element_types.h"

namespace fastrnn {

// The storage types a launcher has kernels for, e.g. TypeList<float, __half>.
template <class... Ts>
struct TypeList {};

template <class T>
struct Tag {
  using type = T;
};

// fn(Tag<T>{}) for the T of `types` whose DType is dtype; `otherwise` when none is.
template <class... Ts, class R, class F>
R dispatch(TypeList<Ts...>, DType dtype, R otherwise, F&& fn) {
  R result = otherwise;
  (void)((dtype == DTypeOf<Ts>::value ? (result = fn(Tag<Ts>{}), true) : false) || ...);
  return result;
}

// f(std::bool_constant<on>{}): the kernel instance whose compile-time bool matches a
// run-time flag (f reads it as decltype(flag)::value). A flag that cannot be on (kPossible
// false, e.g. a bias for a cell without one) costs no second instance.
template <bool kPossible, class F>
decltype(auto) with_flag(bool on, F&& f) {
  if constexpr (kPossible) {
    return on ? f(std::true_type{}) : f(std::false_type{});
  } else {
    return f(std::false_type{});
  }
}

}  // namespace fastrnn

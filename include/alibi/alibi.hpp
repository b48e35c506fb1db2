#pragma once
// alibi: ALiBi attention (attention with linear biases) for CPUs, header-only C++17.
// The one include users need. The fused kernel: attention.hpp -> detail/forward.hpp.

#include "attention.hpp"
#include "backward.hpp"
#include "bias.hpp"
#include "build_info.hpp"
#include "budget.hpp"
#include "paged_kv_cache.hpp"
#include "merge.hpp"
#include "params.hpp"
#include "reference.hpp"
#include "slopes.hpp"
#include "tensor_view.hpp"
#include "varlen.hpp"
#include "version.hpp"

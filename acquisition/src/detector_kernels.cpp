// Highway compiles this file once per SIMD target (foreach_target) and dispatches to the best
// one the CPU supports at run time, so the binary stays portable without -march=native.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "src/detector_kernels.cpp"
#include "src/detector_kernels.hpp"

#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include <cstring>

HWY_BEFORE_NAMESPACE();
namespace twinloop::acquisition::internal {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

void ProcessRows(const RowKernelArgs& a) {
  const hn::ScalableTag<float> df;
  const hn::Rebind<std::int32_t, decltype(df)> di32;
  const hn::Rebind<std::int16_t, decltype(df)> di16;
  const std::size_t lanes = hn::Lanes(df);
  const std::size_t vector_end = a.channels - a.channels % lanes;
  const auto b0 = hn::Set(df, a.b0), b1 = hn::Set(df, a.b1), b2 = hn::Set(df, a.b2);
  const auto a1 = hn::Set(df, a.a1), a2 = hn::Set(df, a.a2);
  const float inv_channels = 1.0f / static_cast<float>(a.channels);

  for (std::size_t r = 0; r < a.rows; ++r) {
    const std::int16_t* x = a.samples + r * a.stride;
    // Pass 1: per-channel biquad. Accumulating the row sum in a vector keeps the reduction for
    // the common reference out of the per-lane dependency chain (one horizontal sum per row).
    auto sum = hn::Zero(df);
    for (std::size_t c = 0; c < vector_end; c += lanes) {
      const auto in = hn::ConvertTo(df, hn::PromoteTo(di32, hn::LoadU(di16, x + c)));
      const auto s1 = hn::LoadU(df, a.z1 + c);
      const auto s2 = hn::LoadU(df, a.z2 + c);
      const auto y = hn::MulAdd(b0, in, s1);
      hn::StoreU(hn::MulAdd(b1, in, hn::NegMulAdd(a1, y, s2)), df, a.z1 + c);
      hn::StoreU(hn::NegMulAdd(a2, y, hn::Mul(b2, in)), df, a.z2 + c);
      hn::StoreU(y, df, a.scratch + c);
      sum = hn::Add(sum, y);
    }
    float tail_sum = 0.0f;
    for (std::size_t c = vector_end; c < a.channels; ++c) {
      const float in = static_cast<float>(x[c]);
      const float y = a.b0 * in + a.z1[c];
      a.z1[c] = a.b1 * in - a.a1 * y + a.z2[c];
      a.z2[c] = a.b2 * in - a.a2 * y;
      a.scratch[c] = y;
      tail_sum += y;
    }
    const float reference = a.common_reference
                                ? (hn::GetLane(hn::SumOfLanes(df, sum)) + tail_sum) * inv_channels
                                : 0.0f;

    // Pass 2: reference, store into the ring, flag threshold crossings.
    const std::uint64_t ring_row = (a.first_row + r) & a.ring_mask;
    float* out = a.ring + ring_row * a.ring_stride;
    std::uint64_t* bits = a.crossing_bits + ring_row * a.bit_words;
    std::memset(bits, 0, a.bit_words * sizeof(std::uint64_t));
    bool crossed = false;
    const auto ref = hn::Set(df, reference);
    for (std::size_t c = 0; c < vector_end; c += lanes) {
      const auto v = hn::Sub(hn::LoadU(df, a.scratch + c), ref);
      hn::StoreU(v, df, out + c);
      if (HWY_UNLIKELY(!hn::AllFalse(df, hn::Lt(v, hn::LoadU(df, a.neg_threshold + c))))) {
        crossed = true;
        for (std::size_t k = c; k < c + lanes; ++k) {
          if (out[k] < a.neg_threshold[k]) bits[k >> 6] |= std::uint64_t{1} << (k & 63);
        }
      }
    }
    for (std::size_t c = vector_end; c < a.channels; ++c) {
      out[c] = a.scratch[c] - reference;
      if (out[c] < a.neg_threshold[c]) {
        crossed = true;
        bits[c >> 6] |= std::uint64_t{1} << (c & 63);
      }
    }
    a.row_crossed[ring_row] = crossed ? 1 : 0;
  }
}

// NOLINTNEXTLINE(google-readability-namespace-comments)
}  // namespace HWY_NAMESPACE
}  // namespace twinloop::acquisition::internal
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace twinloop::acquisition::internal {

HWY_EXPORT(ProcessRows);

void process_rows(const RowKernelArgs& args) {
  HWY_DYNAMIC_DISPATCH(ProcessRows)(args);
}

}  // namespace twinloop::acquisition::internal
#endif

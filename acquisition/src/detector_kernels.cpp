// Highway compiles this file once per SIMD target (foreach_target) and dispatches to the best
// one the CPU supports at run time, so the binary stays portable without -march=native.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "src/detector_kernels.cpp"
#include "src/detector_kernels.hpp"

#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include <bit>

static_assert(std::endian::native == std::endian::little,
              "crossing bit sets are filled byte-wise from SIMD masks");

HWY_BEFORE_NAMESPACE();
namespace twinloop::acquisition::internal {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Filters kRows consecutive rows per pass over the channels, so each channel's filter state is
// loaded and stored once per kRows rows instead of once per row (the state's load/store traffic,
// not the arithmetic, bounds this loop). Filtered values go straight into the ring rows; the
// common reference is then subtracted in place.
template <std::size_t kRows>
HWY_INLINE void FilterRows(const RowKernelArgs& a, std::size_t r0, float* HWY_RESTRICT* out_rows,
                           float* references) {
  const hn::ScalableTag<float> df;
  const hn::Rebind<std::int32_t, decltype(df)> di32;
  const hn::Rebind<std::int16_t, decltype(df)> di16;
  const std::size_t lanes = hn::Lanes(df);
  const std::size_t channels = a.channels;
  const std::size_t vector_end = channels - channels % lanes;
  const std::size_t stride = a.stride;
  const std::int16_t* HWY_RESTRICT x = a.samples + r0 * stride;
  float* HWY_RESTRICT z1 = a.z1;
  float* HWY_RESTRICT z2 = a.z2;
  float* HWY_RESTRICT smooth = a.smooth;
  const float sb0 = a.b0, sb1 = a.b1, sb2 = a.b2, sa1 = a.a1, sa2 = a.a2, salpha = a.alpha;
  const auto b0 = hn::Set(df, sb0), b1 = hn::Set(df, sb1), b2 = hn::Set(df, sb2);
  const auto a1 = hn::Set(df, sa1), a2 = hn::Set(df, sa2), alpha = hn::Set(df, salpha);

  hn::Vec<decltype(df)> sums[kRows];
  for (std::size_t k = 0; k < kRows; ++k) sums[k] = hn::Zero(df);
  for (std::size_t c = 0; c < vector_end; c += lanes) {
    auto s1 = hn::LoadU(df, z1 + c);
    auto s2 = hn::LoadU(df, z2 + c);
    auto s3 = hn::LoadU(df, smooth + c);
    for (std::size_t k = 0; k < kRows; ++k) {
      const auto in = hn::ConvertTo(df, hn::PromoteTo(di32, hn::LoadU(di16, x + k * stride + c)));
      const auto y = hn::MulAdd(b0, in, s1);
      s1 = hn::MulAdd(b1, in, hn::NegMulAdd(a1, y, s2));
      s2 = hn::NegMulAdd(a2, y, hn::Mul(b2, in));
      s3 = hn::MulAdd(alpha, hn::Sub(y, s3), s3);
      hn::StoreU(s3, df, out_rows[k] + c);
      sums[k] = hn::Add(sums[k], s3);
    }
    hn::StoreU(s1, df, z1 + c);
    hn::StoreU(s2, df, z2 + c);
    hn::StoreU(s3, df, smooth + c);
  }
  float tail[kRows] = {};
  for (std::size_t c = vector_end; c < channels; ++c) {
    float s1 = z1[c], s2 = z2[c], s3 = smooth[c];
    for (std::size_t k = 0; k < kRows; ++k) {
      const float in = static_cast<float>(x[k * stride + c]);
      const float y = sb0 * in + s1;
      s1 = sb1 * in - sa1 * y + s2;
      s2 = sb2 * in - sa2 * y;
      s3 += salpha * (y - s3);
      out_rows[k][c] = s3;
      tail[k] += s3;
    }
    z1[c] = s1;
    z2[c] = s2;
    smooth[c] = s3;
  }
  const float inv_channels = 1.0f / static_cast<float>(channels);
  for (std::size_t k = 0; k < kRows; ++k) {
    references[k] = a.common_reference
                        ? (hn::GetLane(hn::SumOfLanes(df, sums[k])) + tail[k]) * inv_channels
                        : 0.0f;
  }
}

// Subtracts the reference in place and flags threshold crossings. Most rows have none, so the
// per-channel bits are only worked out for rows that do.
HWY_INLINE void ReferenceAndThreshold(const RowKernelArgs& a, float* HWY_RESTRICT out,
                                      float reference, std::uint64_t ring_row) {
  const hn::ScalableTag<float> df;
  const std::size_t lanes = hn::Lanes(df);
  const std::size_t channels = a.channels;
  const std::size_t vector_end = channels - channels % lanes;
  const float* HWY_RESTRICT neg_threshold = a.neg_threshold;
  const auto ref = hn::Set(df, reference);
  auto crossed = hn::Lt(hn::Zero(df), hn::Zero(df));  // all false
  for (std::size_t c = 0; c < vector_end; c += lanes) {
    const auto v = hn::Sub(hn::LoadU(df, out + c), ref);
    hn::StoreU(v, df, out + c);
    crossed = hn::Or(crossed, hn::Lt(v, hn::LoadU(df, neg_threshold + c)));
  }
  bool any = !hn::AllFalse(df, crossed);
  for (std::size_t c = vector_end; c < channels; ++c) {
    out[c] -= reference;
    any = any || out[c] < neg_threshold[c];
  }
  a.row_crossed[ring_row] = any ? 1 : 0;
  if (HWY_LIKELY(!any)) return;
  std::uint64_t* HWY_RESTRICT bits = a.crossing_bits + ring_row * a.bit_words;
  for (std::size_t w = 0; w < a.bit_words; ++w) bits[w] = 0;
  std::size_t c = 0;
  if (lanes % 8 == 0) {
    // Whole bytes of mask bits: a vector starting at channel c (a multiple of 8) fills bytes
    // c/8.. of the bit set, which on a little-endian host are the right bits of bits[c/64].
    auto* HWY_RESTRICT bytes = reinterpret_cast<std::uint8_t*>(bits);
    for (; c < vector_end; c += lanes) {
      const auto m = hn::Lt(hn::LoadU(df, out + c), hn::LoadU(df, neg_threshold + c));
      if (!hn::AllFalse(df, m)) hn::StoreMaskBits(df, m, bytes + c / 8);
    }
  }
  for (; c < channels; ++c) {
    if (out[c] < neg_threshold[c]) bits[c >> 6] |= std::uint64_t{1} << (c & 63);
  }
}

void ProcessRows(const RowKernelArgs& a) {
  constexpr std::size_t kBatch = 4;
  float* rows[kBatch];
  float references[kBatch];
  std::size_t r = 0;
  auto ring_row = [&a](std::size_t row) { return (a.first_row + row) & a.ring_mask; };
  for (; r + kBatch <= a.rows; r += kBatch) {
    for (std::size_t k = 0; k < kBatch; ++k) rows[k] = a.ring + ring_row(r + k) * a.ring_stride;
    FilterRows<kBatch>(a, r, rows, references);
    for (std::size_t k = 0; k < kBatch; ++k) {
      ReferenceAndThreshold(a, rows[k], references[k], ring_row(r + k));
    }
  }
  for (; r < a.rows; ++r) {
    rows[0] = a.ring + ring_row(r) * a.ring_stride;
    FilterRows<1>(a, r, rows, references);
    ReferenceAndThreshold(a, rows[0], references[0], ring_row(r));
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

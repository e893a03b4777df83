// keras_hebb's native TensorFlow ops (CPU):
// - KerasHebbKthLargest: the k-th largest value of each row of a float
//   tensor, a drop-in for NthElement(n=k-1, reverse=True), faster on the
//   rows of HaH networks;
// - KerasHebbHahCost and KerasHebbHahCostGrad: the HaH cost of each position
//   of a conv output and its gradient, one pass over each row of channels
//   instead of a dozen element-wise TensorFlow ops.
//
// Two ways to select, by which side of the row is smaller: for m =
// min(k, n - k + 1) <= kFewLimit (the HaH cost's K winners among C
// channels), the largest value below the previous one, m times at most,
// ties counted (one branch-free pass each, which the compiler
// vectorizes); above it (the threshold's 20% of H*W positions) a 256-bin
// histogram over the row's range finds the bin that holds the k-th value,
// and the search goes on among that bin's values only. Both work on
// order-preserving integer keys of the floats and return the k-th value of
// the row exactly as sorting would, ties counted.
//
// With spatial=true the input is NHWC and each row is the H*W values of one
// image and channel, read in place (no transposed copy); the output is
// (N, C). Otherwise the rows are the last axis and the output drops it.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"

namespace {

using tensorflow::int64;
using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using tensorflow::TensorShape;

constexpr int64 kFewLimit = 16;

// Order-preserving signed keys: a < b as floats iff key(a) < key(b).
inline int32_t ToKey(float value) {
  int32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  return bits ^ ((bits >> 31) & 0x7fffffff);
}

inline float FromKey(int32_t key) {
  const int32_t bits = key ^ ((key >> 31) & 0x7fffffff);
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}

// The m-th largest of keys[0..n), m small: the largest key below the last
// one found, m times at most, counting its ties; one branch-free pass
// (which the compiler vectorizes) counts the ties of one key and finds the
// next.
int32_t ByRepeatedMax(const int32_t* __restrict keys, int64 n, int64 m) {
  constexpr int32_t kLowest = std::numeric_limits<int32_t>::min();
  int32_t top = keys[0];
  for (int64 i = 1; i < n; ++i) top = std::max(top, keys[i]);
  for (;;) {
    int32_t ties = 0, next = kLowest;
    for (int64 i = 0; i < n; ++i) {
      const int32_t key = keys[i];
      ties += key == top;
      const int32_t below = -static_cast<int32_t>(key < top);  // all ones or 0
      const int32_t v = (key & below) | (kLowest & ~below);
      next = next > v ? next : v;
    }
    if (ties >= m) return top;
    m -= ties;
    top = next;
  }
}

// keys[i] = ToKey(row[i * stride]).
void ToKeys(const float* __restrict row, int64 stride, int64 n, int32_t* __restrict keys) {
  if (stride == 1) {
    for (int64 i = 0; i < n; ++i) keys[i] = ToKey(row[i]);
  } else {
    for (int64 i = 0; i < n; ++i) keys[i] = ToKey(row[i * stride]);
  }
}

int32_t ByHistogram(int32_t* keys, int64 n, int64 k);

// The k-th largest key of keys[0..n) (keys may be reordered).
inline int32_t SelectKey(int32_t* keys, int64 n, int64 k) {
  const int64 smallest = n - k + 1;  // the k-th largest is this-th smallest
  if (k <= kFewLimit) return ByRepeatedMax(keys, n, k);
  if (smallest <= kFewLimit) {
    // The smallest-th smallest: the same on negated keys.
    for (int64 i = 0; i < n; ++i) keys[i] = ~keys[i];
    return ~ByRepeatedMax(keys, n, smallest);
  }
  return ByHistogram(keys, n, k);
}

// The k-th largest of keys[0..n): a 256-bin histogram spread linearly over
// [min, max] of the keys finds the bin holding it, then a selection among
// that bin's keys. Any monotone binning is exact; linear in the keys spreads
// the row's values over the bins roughly by their logarithm.
int32_t ByHistogram(int32_t* keys, int64 n, int64 k) {
  int32_t lo = keys[0], hi = keys[0];
  for (int64 i = 1; i < n; ++i) {
    lo = std::min(lo, keys[i]);
    hi = std::max(hi, keys[i]);
  }
  for (;;) {
    if (lo == hi) return lo;
    const uint64_t span = static_cast<uint64_t>(static_cast<int64>(hi) - lo);
    int shift = 0;
    while ((span >> shift) >= 256) ++shift;
    int64 hist[2][256] = {};
    for (int64 i = 0; i < n; ++i) {
      ++hist[i & 1][static_cast<uint64_t>(static_cast<int64>(keys[i]) - lo) >> shift];
    }
    int bin = 255;
    int64 above = 0;
    while (above + hist[0][bin] + hist[1][bin] < k) above += hist[0][bin] + hist[1][bin--];
    k -= above;
    int64 kept = 0;
    const int64 bin_lo = static_cast<int64>(lo) + (static_cast<int64>(bin) << shift);
    const int64 bin_hi = bin_lo + (int64{1} << shift);  // exclusive
    for (int64 i = 0; i < n; ++i) {
      keys[kept] = keys[i];
      kept += static_cast<int64>(keys[i]) >= bin_lo && static_cast<int64>(keys[i]) < bin_hi;
    }
    n = kept;
    if (n <= 64) {
      std::nth_element(keys, keys + (k - 1), keys + n, std::greater<int32_t>());
      return keys[k - 1];
    }
    lo = hi = keys[0];
    for (int64 i = 1; i < n; ++i) {
      lo = std::min(lo, keys[i]);
      hi = std::max(hi, keys[i]);
    }
  }
}

class KthLargestOp : public OpKernel {
 public:
  explicit KthLargestOp(OpKernelConstruction* context) : OpKernel(context) {
    OP_REQUIRES_OK(context, context->GetAttr("k", &k_));
    OP_REQUIRES_OK(context, context->GetAttr("spatial", &spatial_));
  }

  void Compute(OpKernelContext* context) override {
    const Tensor& input = context->input(0);
    const TensorShape& shape = input.shape();
    TensorShape out_shape;
    int64 n, stride, channels;
    if (spatial_) {
      OP_REQUIRES(context, shape.dims() == 4,
                  tensorflow::errors::InvalidArgument(
                      "spatial=True needs an NHWC tensor, got shape ", shape.DebugString()));
      n = shape.dim_size(1) * shape.dim_size(2);
      channels = shape.dim_size(3);
      stride = channels;
      out_shape.AddDim(shape.dim_size(0));
      out_shape.AddDim(channels);
    } else {
      OP_REQUIRES(context, shape.dims() >= 1,
                  tensorflow::errors::InvalidArgument("input must have rank >= 1"));
      n = shape.dim_size(shape.dims() - 1);
      channels = 1;
      stride = 1;
      for (int d = 0; d + 1 < shape.dims(); ++d) out_shape.AddDim(shape.dim_size(d));
    }
    OP_REQUIRES(context, k_ <= n,
                tensorflow::errors::InvalidArgument("k = ", k_, " exceeds the ", n,
                                                    " values of a row"));
    Tensor* output = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, out_shape, &output));
    const int64 rows = out_shape.num_elements();
    if (rows == 0) return;
    const float* data = input.flat<float>().data();
    float* out = output->flat<float>().data();
    const int64 k = k_;
    const bool spatial = spatial_;

    auto work = [&](int64 begin, int64 end) {
      std::vector<int32_t> keys(n);
      for (int64 r = begin; r < end; ++r) {
        const float* row = spatial ? data + (r / channels) * n * channels + r % channels
                                   : data + r * n;
        ToKeys(row, stride, n, keys.data());
        out[r] = FromKey(SelectKey(keys.data(), n, k));
      }
    };
    const auto& workers = *context->device()->tensorflow_cpu_worker_threads();
    tensorflow::Shard(workers.num_threads, workers.workers, rows, n * 8, work);
  }

 private:
  int64 k_;
  bool spatial_;
};


// sum_c max(row, t) and sum_c max(row, 0), in 8 partial sums (the compiler
// does not reorder a float sum on its own, so it could not vectorize it).
void RowSums(const float* __restrict row, int64 n, float t, float* top, float* total) {
  float tops[8] = {}, totals[8] = {};
  int64 i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int j = 0; j < 8; ++j) {
      tops[j] += std::max(row[i + j], t);
      totals[j] += std::max(row[i + j], 0.0f);
    }
  }
  float a = 0.0f, b = 0.0f;
  for (int j = 0; j < 8; ++j) {
    a += tops[j];
    b += totals[j];
  }
  for (; i < n; ++i) {
    a += std::max(row[i], t);
    b += std::max(row[i], 0.0f);
  }
  *top = a;
  *total = b;
}

// The HaH cost of each position of a conv output z (..., C) with K = winners
// (keras_hebb.hah_cost.hah_cost): with r = relu(z) and t = the K-th largest
// r, value = (1/K + lose) * (sum of the top K of r) - lose * sum(r), where
// the top K sum is sum_c max(z, t) - (C - K) t. Outputs the value and t.
class HahCostOp : public OpKernel {
 public:
  explicit HahCostOp(OpKernelConstruction* context) : OpKernel(context) {
    OP_REQUIRES_OK(context, context->GetAttr("winners", &winners_));
    OP_REQUIRES_OK(context, context->GetAttr("lose", &lose_));
  }

  void Compute(OpKernelContext* context) override {
    const Tensor& input = context->input(0);
    OP_REQUIRES(context, input.dims() >= 1,
                tensorflow::errors::InvalidArgument("z must have rank >= 1"));
    const int64 n = input.dim_size(input.dims() - 1);
    OP_REQUIRES(context, winners_ < n,
                tensorflow::errors::InvalidArgument("winners = ", winners_,
                                                    " must be below the ", n, " channels"));
    TensorShape out_shape = input.shape();
    out_shape.RemoveLastDims(1);
    Tensor* value = nullptr;
    Tensor* kth = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, out_shape, &value));
    OP_REQUIRES_OK(context, context->allocate_output(1, out_shape, &kth));
    const int64 rows = out_shape.num_elements();
    if (rows == 0) return;
    const float* z = input.flat<float>().data();
    float* values = value->flat<float>().data();
    float* kths = kth->flat<float>().data();
    const int64 k = winners_;
    const float lose = lose_;
    const float win = 1.0f / static_cast<float>(k) + lose;
    auto work = [&](int64 begin, int64 end) {
      std::vector<int32_t> keys(n);
      for (int64 r = begin; r < end; ++r) {
        const float* row = z + r * n;
        ToKeys(row, 1, n, keys.data());
        const float t = std::max(FromKey(SelectKey(keys.data(), n, k)), 0.0f);
        float top, total;
        RowSums(row, n, t, &top, &total);
        top -= static_cast<float>(n - k) * t;
        values[r] = win * top - lose * total;
        kths[r] = t;
      }
    };
    const auto& workers = *context->device()->tensorflow_cpu_worker_threads();
    tensorflow::Shard(workers.num_threads, workers.workers, rows, n * 8, work);
  }

 private:
  int64 winners_;
  float lose_;
};

// One row of the cost's gradient: selects on values (restrict pointers, all
// by value), which the compiler vectorizes.
void WriteCostGradient(const float* __restrict row, float* __restrict grad, int64 n,
                       float t, float winner, float tie, float loser) {
  for (int64 i = 0; i < n; ++i) {
    const float v = row[i];
    float g = v > 0.0f ? loser : 0.0f;
    g = v == t ? tie : g;
    grad[i] = v > t ? winner : g;
  }
}

// The gradient of the mean of HahCost's value times d_cost with respect to
// z, given z, t and scale = d_cost / positions: winners (z > t) weigh 1/K,
// channels tied at t > 0 share the free winner slots, other positive
// channels weigh -lose, the rest 0; all times scale.
class HahCostGradOp : public OpKernel {
 public:
  explicit HahCostGradOp(OpKernelConstruction* context) : OpKernel(context) {
    OP_REQUIRES_OK(context, context->GetAttr("winners", &winners_));
    OP_REQUIRES_OK(context, context->GetAttr("lose", &lose_));
  }

  void Compute(OpKernelContext* context) override {
    const Tensor& input = context->input(0);
    const Tensor& kth = context->input(1);
    const Tensor& scale_tensor = context->input(2);
    OP_REQUIRES(context, input.dims() >= 1 && kth.NumElements() * input.dim_size(input.dims() - 1)
                    == input.NumElements(),
                tensorflow::errors::InvalidArgument("kth must have one value per row of z"));
    OP_REQUIRES(context, scale_tensor.NumElements() == 1,
                tensorflow::errors::InvalidArgument("scale must be a scalar"));
    const int64 n = input.dim_size(input.dims() - 1);
    Tensor* output = nullptr;
    OP_REQUIRES_OK(context, context->allocate_output(0, input.shape(), &output));
    const int64 rows = kth.NumElements();
    if (rows == 0) return;
    const float* z = input.flat<float>().data();
    const float* kths = kth.flat<float>().data();
    float* dz = output->flat<float>().data();
    const float scale = scale_tensor.flat<float>()(0);
    const float k = static_cast<float>(winners_);
    const float lose = lose_;
    const float winner = scale / k, loser = -lose * scale;
    auto work = [&](int64 begin, int64 end) {
      for (int64 r = begin; r < end; ++r) {
        const float* row = z + r * n;
        float* grad = dz + r * n;
        const float t = kths[r];
        int32_t above = 0, tied = 0;
        for (int64 i = 0; i < n; ++i) {
          above += row[i] > t;
          tied += row[i] == t;
        }
        const float share = (k - static_cast<float>(above)) /
                            std::max(static_cast<float>(tied), 1.0f);
        const float tie = t > 0.0f ? (share * (1.0f / k + lose) - lose) * scale : 0.0f;
        WriteCostGradient(row, grad, n, t, winner, tie, loser);
      }
    };
    const auto& workers = *context->device()->tensorflow_cpu_worker_threads();
    tensorflow::Shard(workers.num_threads, workers.workers, rows, n * 4, work);
  }

 private:
  int64 winners_;
  float lose_;
};

}  // namespace

REGISTER_OP("KerasHebbKthLargest")
    .Input("input: float")
    .Attr("k: int >= 1")
    .Attr("spatial: bool = false")
    .Output("output: float")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      bool spatial;
      TF_RETURN_IF_ERROR(c->GetAttr("spatial", &spatial));
      tensorflow::shape_inference::ShapeHandle in = c->input(0);
      if (!c->RankKnown(in)) {
        c->set_output(0, c->UnknownShape());
        return absl::OkStatus();
      }
      if (spatial) {
        TF_RETURN_IF_ERROR(c->WithRank(in, 4, &in));
        c->set_output(0, c->MakeShape({c->Dim(in, 0), c->Dim(in, 3)}));
      } else {
        tensorflow::shape_inference::ShapeHandle out;
        TF_RETURN_IF_ERROR(c->WithRankAtLeast(in, 1, &in));
        TF_RETURN_IF_ERROR(c->Subshape(in, 0, -1, &out));
        c->set_output(0, out);
      }
      return absl::OkStatus();
    });

REGISTER_KERNEL_BUILDER(Name("KerasHebbKthLargest").Device(tensorflow::DEVICE_CPU),
                        KthLargestOp);

REGISTER_OP("KerasHebbHahCost")
    .Input("z: float")
    .Attr("winners: int >= 1")
    .Attr("lose: float")
    .Output("value: float")
    .Output("kth: float")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      tensorflow::shape_inference::ShapeHandle in = c->input(0), out;
      if (!c->RankKnown(in)) {
        c->set_output(0, c->UnknownShape());
        c->set_output(1, c->UnknownShape());
        return absl::OkStatus();
      }
      TF_RETURN_IF_ERROR(c->WithRankAtLeast(in, 1, &in));
      TF_RETURN_IF_ERROR(c->Subshape(in, 0, -1, &out));
      c->set_output(0, out);
      c->set_output(1, out);
      return absl::OkStatus();
    });

REGISTER_KERNEL_BUILDER(Name("KerasHebbHahCost").Device(tensorflow::DEVICE_CPU), HahCostOp);

REGISTER_OP("KerasHebbHahCostGrad")
    .Input("z: float")
    .Input("kth: float")
    .Input("scale: float")
    .Attr("winners: int >= 1")
    .Attr("lose: float")
    .Output("dz: float")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(0));
      return absl::OkStatus();
    });

REGISTER_KERNEL_BUILDER(Name("KerasHebbHahCostGrad").Device(tensorflow::DEVICE_CPU),
                        HahCostGradOp);

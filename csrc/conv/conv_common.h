// Argument checks and geometry construction shared by the CPU and CUDA implementations of
// the conv ops, so that both devices reject bad input with the same messages.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

#include <optional>
#include <string>
#include <string_view>

#include "../checks.h"
#include "../compute_type.h"
#include "conv_geometry.h"

namespace tco {

// Helpers of the argument checks, shared with the families built on ConvGeometry (local).
// `op` prefixes every message ("cnn_ops.conv", ...).

// t is float32, float64, float16 or bfloat16.
void check_dtype(const at::Tensor& t, const char* name, const char* op = "cnn_ops.conv");
// a and b have the same dtype and device.
void check_same_kind(const at::Tensor& a, const char* a_name, const at::Tensor& b,
                     const char* b_name, const char* op = "cnn_ops.conv");
// Checks the per-dimension arguments (one entry each per spatial dimension, 1 to 3 of them)
// and fills g's stride, pad, dilation and groups; 1-d and 2-d map onto the trailing dimensions.
// The output size along spatial dimension d (the i-th of the input) of a forward convolution
// of c.in_size[d] positions padded by (c.pad[d], pad_end), for c's kernel, stride and
// dilation: refused when the dilated kernel is larger than the padded input, with size
// arithmetic that refuses int64 overflow (torch refuses such sizes too). Convolution and
// tiled / unshared convolution share it.
int64_t forward_extent(const char* op, const ConvGeometry& c, int64_t d, int64_t i, int64_t pad_end,
                       at::IntArrayRef input_sizes);

// The backward ops take grad_output's spatial size as the output size (their trailing pad is
// implied by it): along dimension d it must be one that a forward convolution of c.in_size[d]
// positions gives for some trailing pad: at least one output, the last window reaching the
// input's last position, and no more outputs than the largest trailing pad of any padding mode
// ('full': dilation * (kernel - 1)) gives.
void check_backward_extent(const char* op, const ConvGeometry& c, int64_t d, int64_t i,
                           at::IntArrayRef grad_output_sizes, at::IntArrayRef input_sizes);

// Fills c's spatial input and output sizes for a forward op (forward_extent per dimension), the
// other fields set; padding_end has one entry per spatial dimension.
void fill_forward_extents(const char* op, ConvGeometry& c, const at::Tensor& input, at::IntArrayRef padding_end);

// The same for a backward op: grad_output's batch and channels must be c's, its spatial sizes
// become the output sizes (check_backward_extent), input_sizes gives the input's.
void fill_backward_extents(const char* op, ConvGeometry& c, const at::Tensor& grad_output,
                           at::IntArrayRef input_sizes);

void fill_spatial_args(ConvGeometry& g, at::IntArrayRef stride, at::IntArrayRef padding,
                       at::IntArrayRef dilation, int64_t groups, const char* op = "cnn_ops.conv");

enum class ConvAlgorithm { Direct, Im2col, Shifted, Aten, Winograd2, Winograd4, Winograd6 };

// The pass of a convolution an algorithm is resolved for ("auto" may pick per pass).
enum class ConvPass { Forward, InputGradient, WeightGradient };

// The name an algorithm is requested by ("direct", ..., "winograd_2x2").
const char* algorithm_name(ConvAlgorithm a);

// Whether the CPU is Intel's: some CPU rules (auto's and Winograd's weight gradient) were
// measured to differ there.
bool intel_cpu();

// The tile (outputs per dimension) of a Winograd algorithm, 0 for the others.
inline int winograd_tile(ConvAlgorithm a) {
  return a == ConvAlgorithm::Winograd2 ? 2 : a == ConvAlgorithm::Winograd4 ? 4 : a == ConvAlgorithm::Winograd6 ? 6 : 0;
}

// Parses "direct" / "im2col" / "shifted" / "aten" / "winograd" / "winograd_2x2" /
// "winograd_4x4" / "winograd_6x6" / "auto" and resolves "auto" for the geometry. "winograd" is
// F(4x4, 3x3), or F(2x2, 3x3) for 3x3 kernels on output planes of at most 14x14
// (winograd_default_tile; conv_winograd.h; 2x2 is the more accurate, 6x6 the fewest
// multiplications);
// an explicit Winograd algorithm where it does not apply (winograd_applies) is an error.
// "aten" is ATen's own convolution, the one torch.nn.functional.conv* runs (oneDNN on the CPU,
// cuDNN on CUDA). The "auto" rule, where each algorithm is the fastest:
//  * aten on devices without the shifted algorithm (CUDA): cuDNN's kernels are tuned per
//    architecture, ours are plain direct and im2col kernels;
//  * winograd_2x2 for 2-d 3x3 kernels at stride 1 and dilation 1 with at least
//    kWinogradMinChannels input and output channels per group, on output planes of at least
//    kWinogradMinPlane, for float32 in the contiguous layout (channels-last pays a conversion
//    each way, measured 1.1-1.2x torch's time; half and bfloat16 were not measured). The 2x2
//    tile keeps float32 within 2e-6 of the exact result (4x4 is faster on large planes but
//    up to 5e-5 off, so it is for users to choose). Measured fwd+bwd against torch (2 threads,
//    three runs of the conv benchmark, two with the default allocator): 64->64 (8, 56x56)
//    0.83-1.03, 128->128 (8, 28x28) 0.86-0.89, 256->256 (8, 14x14) 0.84-0.91; forward alone
//    0.52-0.87, 0.75-0.77 and 0.76-0.80; ResNet layers at batch 1, forward: 64->64 (56x56)
//    0.79, 128->128 (28x28) 0.83; it loses below the thresholds: 32 channels (8, 56x56) 0.96,
//    (16, 28x28) 1.40; 16 channels 2.5; 8 per group 1.15; 512 channels on 7x7 1.87.
//    All of that on an AMD EPYC (AVX-512). Not on Intel's CPUs, where ATen's convolution
//    (oneDNN's direct kernels) kept up: on a 2-core Intel Xeon (AVX-512), four runs of the
//    conv benchmark (two per allocator), fwd+bwd against torch: winograd_2x2 1.22-1.40 on
//    64->64 (8, 56x56), 0.97-1.00 on 128->128 (8, 28x28), 1.02-1.03 on 256->256 (8, 14x14),
//    aten 1.01-1.07 on all three; converted resnet18 training steps 1.00-1.19x torch's time with
//    Winograd (three runs), 0.97-1.00x with aten (two runs; resnet50 0.96-0.99). Since the
//    Winograd pass reads U and V as streams (slabs and panels), on Intel's CPUs winograd_2x2
//    for the forward and the input gradient (the weight gradient stays with aten, see
//    winograd_weight_gradient_pays) of layers with at least kWinogradIntelMinChannels input
//    and output channels per group on output planes of at least kWinogradIntelMinSide squared,
//    with at least kWinogradIntelMinPositions output positions over the batch. Measured there
//    (2 threads, steady allocator, interleaved runs), time relative to torch's, forward /
//    input gradient:
//      (8, 128, 28x28) 0.90 / 0.87    (8, 256, 28x28) 0.74 / 0.74    (8, 512, 28x28) 0.81 / 0.70
//      (4, 128, 28x28) 0.88 / 0.90    (2, 256, 28x28) 0.73 / 0.76    (8, 128, 56x56) 0.86 / 0.88
//    and forward + backward of 128->128 (8, 28x28) 0.93-0.99 in four runs of the conv benchmark
//    (aten 1.00-1.07). Where it lost or drew: (8, 128, 14x14) 1.02 / 0.99, (1, 128, 28x28) 1.00
//    (forward), (1, 256, 14x14) 1.34, (8, 64, 56x56) 1.09, (32, 64, 28x28) 1.11, (8, 64,
//    20x20) 1.22, 7x7 planes 1.37-2.62 (the 4x4 tile won the 64-channel layers, but is up to
//    5e-5 off); 256->256 (8, 14x14) won the passes (0.90 / 0.88) but drew forward + backward
//    (0.91-1.02 in four runs, aten 1.00-1.05): ATen's weight gradient alone cost more than its
//    share of the one call that computes both gradients otherwise;
//  * one input channel per group: im2col for a single-channel input (an unfold of one channel
//    is cheap; oneDNN is slow there); for depthwise convolutions (groups > 1) direct in 1-d and
//    3-d, and in 2-d for 3x3 kernels at stride 1 and dilation 1 on output planes of at least
//    kDirectDepthwiseMinPlane (kDirectDepthwiseMinPlaneAlone for a batch of one), aten for the
//    other 2-d ones. There the direct loops' per-row work does not pay on short rows, while
//    oneDNN vectorises across channels. Measured on MobileNetV3-Small's depthwise layers and
//    others (2 threads, Intel Xeon, steady allocator), direct's time over aten's, forward /
//    input gradient / weight gradient:
//      (8, 32, 112x112) 3x3   0.99 / 0.75 / 0.70    (1, 32, 112x112) 3x3   0.55 / 0.58 / 0.69
//      (8, 64, 56x56) 3x3     0.96 / 0.92 / 0.92    (1, 88, 28x28) 3x3     0.46 / 0.56 / 0.43
//      (8, 128, 28x28) 3x3    1.21 / 1.54 / 0.98    (8, 256, 14x14) 3x3    2.39 / 2.59 / 1.60
//      (8, 88, 14x14) 3x3     1.46 / 1.79 / 1.21    (8, 64, 56x56) 3x3 s2  2.24 / 2.06 / 2.11
//      (1, 16, 112x112) 3x3 s2 1.59 / 1.36 / 0.81   (8, 32, 56x56) 5x5     2.35 / 2.00 / 0.25
//      (8, 240, 7x7) 5x5      8.41 / 7.29 / 1.01    (1, 240, 14x14) 5x5    2.50 / 2.49 / 0.88
//    A converted MobileNetV3-Small took 1.24x torch's time per training step and 1.59x per
//    eval forward at (8, 3, 112x112) with direct for all of them. The weight gradient of 5x5
//    kernels at stride 1 runs direct on output planes of at least
//    kDirectDepthwiseWeightMinPlane (each pass is resolved on its own): direct's time over
//    aten's, weight gradient alone, (8, 32, 56x56) 0.31, (8, 144, 28x28) 0.29, (1, 120, 14x14)
//    0.81, (1, 240, 14x14) 0.86, (8, 240, 14x14) 0.91, but (8, 240, 7x7) 0.99;
//  * grouped 3x3 layers at stride 1 and dilation 1 with kDirectGroupedChannels input channels
//    per group (2-d, float32, contiguous layout): direct on Intel's CPUs, where oneDNN is slow
//    on so few channels per group. Measured there (2 threads, steady allocator, interleaved
//    runs), direct against torch, forward / fwd+bwd (aten 0.98-1.04 in all):
//      (8, 64, 56x56) g32  0.26 / 0.26    (8, 32, 112x112) g16  0.35 / 0.24
//      (8, 64, 28x28) g32  0.36 / 0.25    (1, 64, 28x28) g32    0.30 / 0.24
//      (8, 128, 14x14) g64 0.49 / 0.51    (8, 256, 7x7) g128    0.71 / 0.69
//    With 3 or 4 per group (ResNeXt's 32x4d layers), on output planes of at least
//    kDirectGroupedWeightMinPlane, direct for the weight gradient alone: there oneDNN's weight
//    gradient takes 3-5x its input gradient's time. Measured (the op of each pass, against
//    aten's), weight gradient direct / im2col, input gradient direct / im2col:
//      (8, 64, 56x56) g16    0.42 / 0.49   1.27 / 1.23   (8, 128, 28x28) g32  0.32 / 0.40   2.45 / 2.04
//      (1, 128, 56x56) g32   0.41 / 0.50   1.60 / 1.38   (8, 256, 56x56) g64  0.44 / 0.49   1.28 / 1.20
//      (8, 256, 28x28) g64   0.34 / 0.41   2.33 / 1.97   (8, 512, 14x14) g128 0.86 / 1.22   4.65 / 4.10
//    and the forward, direct against torch: 1.15-2.40 on six shapes (aten 0.88-0.96), so
//    forward and input gradient stay with aten. With 8 per group aten throughout ((8, 64,
//    56x56) g8 fwd+bwd: direct 2.40, aten 0.90);
//  * 1x1 kernels: im2col when strided (its unfold is a strided copy), aten at unit stride, but
//    im2col (at unit stride one GEMM per sample over the input as it is) for 1-d float32 ones
//    without groups of at most kIm2col1dMaxChannelProduct input x output channels on Intel's
//    CPUs, where oneDNN's 1-d 1x1 path is slow. Measured there (2 threads, steady allocator,
//    interleaved runs), fwd+bwd / forward against torch, im2col then aten:
//      64->64 (8, 256)     0.64 / 0.61   0.92 / 1.00    64->64 (8, 128)     0.59 / 0.55  0.96 / 1.01
//      128->128 (8, 64)    0.69 / 0.67   0.88 / 1.01    256->64 (8, 1000)   0.79 / 0.75  0.98 / 0.95
//      64->64 (8, 4000)    0.72 / 0.74   0.93 / 0.98    64->256 (4, 3136)   0.77 / 0.77  0.98 / 0.95
//      128->256 (32, 128)  0.85 / 0.88   0.92 / 0.97    80->256 (2, 3000)   0.83 / 0.73  0.98 / 0.97
//    and beyond the product: 256->256 (32, 50) 1.08 / 1.30 (aten 0.94 / 0.99), 512->512 (8, 100)
//    1.00 / 1.05 (0.96 / 0.98), (8, 200) 0.93 / 0.99 (0.97 / 0.98), 256->256 (1, 16000)
//    0.96 / 0.91 (0.99 / 0.98). (With the default allocator im2col measured 0.52-0.63 fwd+bwd.)
//    3-tap 1-d kernels stay with aten there: winograd_4x4 0.78-1.03 and im2col 0.72-1.10
//    against aten's 0.86-1.00 on four shapes, none of them ahead on every one.
//    Shifted (one GEMM over the input as it is) measured 1.3-1.9x torch's time there with the
//    steady allocator on every shape tried, fwd+bwd, and forward on the first six: 64->256 and
//    256->64 on (8, 28x28) and (1, 56x56), 64->256 (8, 56x56), 512->128 (8, 28x28), then
//    256->64, 128->128 and 64->128 (8, 56x56), 64->256 (4, 56x56) and (2, 112x112), 128->512
//    (8, 28x28). With the default allocator the page faults of fresh outputs swing both sides'
//    times by 2-4x, which made it look faster in earlier runs (the 1x1 rows below);
//  * aten otherwise (kernels larger than 1x1 with several channels per group).
// Measured (python -m torch_cnn_ops bench conv with its steady allocator; the rows without a
// direct figure, and the 1-d ones, in a separate run with the default allocator, which moves
// figures by up to 20%), 2 threads, forward+backward, float32, time relative to
// torch.nn.functional.conv* in the same run:
//   case                       direct  im2col  shifted  aten
//   3->16 k5 (32, 32x32)        5.08    1.24    2.08    1.02
//   64->64 k3 (8, 56x56)       10.4     1.53    1.39    1.02
//   256->256 k3 (8, 14x14)     39.5     1.70    1.63    0.99
//   32->64 k3 s2 (8, 56x56)    19.5     1.25     -      1.05
//   grouped 64 g8 k3           3.87     1.54    1.46    0.94
//   64->256 k1 (8, 56x56)      6.00     1.10    1.08    1.05   (another run: 0.81 0.45 0.64)
//   256->64 k1 (8, 56x56)       -       0.65    0.65    1.11
//   512->128 k1 (8, 28x28)      -       1.12    0.99    1.02
//   1024->256 k1 (8, 14x14)     -       1.18    1.16    1.01
//   1-d 64->64 k1 (8, 4000)    2.18     1.34    0.93    1.21
//   1-d 256->64 k1 (8, 1000)    -       0.73    0.76    1.68
//   64->128 k1 s2 (8, 56x56)  10.1     0.77     -      1.15
//   1-d 1->32 k9 s2 (8, 16000) 2.39    0.77     -      1.89
//   depthwise 32 k3 (8, 112^2) 0.74-0.81  1.78-2.09  1.41-1.55  1.00-1.28  (four runs, Intel)
// An explicit "shifted" with a stride other than 1 is an error; on a device without the
// shifted algorithm (`shifted_applies` nullptr), and where its per-thread buffers would pass
// their budget (`shifted_applies` false), it runs as im2col.
// `like` is the tensor the op computes on: its dtype and layout enter the rule.
ConvAlgorithm resolve_algorithm(std::string_view algorithm, const ConvGeometry& g, const at::Tensor& like,
                                bool (*shifted_applies)(const ConvGeometry&, int64_t), ConvPass pass);
constexpr int64_t kWinogradMinChannels = 64;
constexpr int64_t kWinogradMinPlane = 14 * 14;
constexpr int64_t kWinogradIntelMinChannels = 128;
constexpr int64_t kWinogradIntelMinSide = 28;
constexpr int64_t kWinogradIntelMinPositions = 2 * 28 * 28;
constexpr int64_t kDirectDepthwiseMinPlane = 56 * 56;
constexpr int64_t kDirectDepthwiseMinPlaneAlone = 28 * 28;
constexpr int64_t kDirectDepthwiseWeightMinPlane = 14 * 14;
constexpr int64_t kIm2col1dMaxChannelProduct = 128 * 256;
constexpr int64_t kDirectGroupedChannels = 2;
constexpr int64_t kDirectGroupedWeightMaxChannels = 4;
constexpr int64_t kDirectGroupedWeightMinPlane = 14 * 14;

ConvGeometry forward_geometry(const at::Tensor& input, const at::Tensor& weight,
                              const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                              at::IntArrayRef padding, at::IntArrayRef padding_end,
                              at::IntArrayRef dilation, int64_t groups);

ConvGeometry input_backward_geometry(const at::Tensor& grad_output, const at::Tensor& weight,
                                     at::IntArrayRef input_size, at::IntArrayRef stride,
                                     at::IntArrayRef padding, at::IntArrayRef dilation,
                                     int64_t groups);

ConvGeometry weight_backward_geometry(const at::Tensor& grad_output, const at::Tensor& input,
                                      at::IntArrayRef weight_size, at::IntArrayRef stride,
                                      at::IntArrayRef padding, at::IntArrayRef dilation,
                                      int64_t groups);

}  // namespace tco

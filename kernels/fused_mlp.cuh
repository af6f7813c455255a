// Fully fused tensor-core MLP for kpnt's per-pixel kernel predictor.
//
// Host-side interface of the fused kernels: kernels/mlp.cu (the plain MLP op),
// colour_level.cu and front_level.cu, one translation unit per op over the
// shared core kernels/mlp_core.cuh, instantiated from kernels/shapes.def.
// This header is included by the bindings (plain C++, no nvcc) and by the .cu
// files, so it holds no device code and no torch types: the launchers take raw
// device pointers.
//
// Errors cross this interface as C strings, never as C++ exceptions or
// std::string.  On the GPU machines (torch 2.11, g++ 13 wrapper over the
// system's libstdc++ headers) the interpreter crashed (SIGSEGV) on a
// std::string returned from the nvcc-compiled unit, on a TORCH_CHECK failure
// and on binding code that formatted messages with std::ostringstream; the
// common factor seems to be iostreams inside the extension, so there are none
// (messages use snprintf / std::string), and nothing is thrown across units.
// Each launcher returns nullptr on success, else "ValueError|message" or
// "RuntimeError|message" (thread-local storage, valid until the next call).
//
// Network (DESIGN.md section 2): x (P, in) -> [W0 (hidden, in), leaky ReLU]
// -> (n_hidden - 1) x [Wl (hidden, hidden), leaky ReLU] -> Wout (out, hidden)
// -> y (P, out).  No biases (the last input feature is a constant 1).  Weights
// are packed row-major, matrix after matrix, into one buffer of
// n_weights(dims) elements; G weight sets ("groups", one per photosite class)
// are G such buffers back to back.
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

#ifdef __CUDACC__
#define KPNT_HD __host__ __device__
#else
#define KPNT_HD
#endif

namespace kpnt {

struct MlpDims {
  int in;        // input features (multiple of 16)
  int hidden;    // hidden width (multiple of 16)
  int out;       // outputs (multiple of 16)
  int n_hidden;  // hidden layers (each with an activation); matrices = n_hidden + 1
};

// Number of weights of one set, packed as described above.
int64_t mlp_n_weights(const MlpDims& d);

// The lines of kernels/shapes.def compiled into this build, human readable, e.g.
// "colour (taps=15, in=32, hidden=64, out=16, n_hidden=6, train=1), front (...)".
// (A C string: std::string must not cross between the nvcc-compiled and the
// C++-compiled translation units, whose libstdc++ ABI settings can differ.)
const char* mlp_supported_configs();

// True if `d` is one of the compiled configurations.
bool mlp_is_supported(const MlpDims& d);

// One line of kernels/shapes.def: op 0 colour (key0 = taps, key1 = 0) or 1
// front (key0 = radius, key1 = kernels per pixel), the MLP, train 1 if the
// backward is compiled.  Plain ints: read by the bindings as data.
struct FusedShape {
  int op, key0, key1, in, hidden, out, n_hidden, train;
};

// The compiled lines of kernels/shapes.def, in file order; *count gets their number.
const FusedShape* fused_shapes(int* count);

// Rows of one block tile of the backward kernel (the pixel count over which
// one tensor-core weight-gradient product sums).
int mlp_bwd_tile_rows();

// Common arguments.  Row indexing: logical rows are 0..P-1.  Without `perm`
// (groups == 1 only) logical row r is memory row r.  With `perm`, logical rows
// are ordered by group (offsets[g] .. offsets[g+1]-1 belong to group g, and
// offsets[groups] == P) and logical row r is memory row perm[r]; `perm` and
// `offsets` are device int32 arrays.
struct MlpArgs {
  MlpDims dims;
  int64_t P;
  int groups;
  const float* x;        // (P, in) float32, row-major
  const void* w;         // (groups, n_weights) float16 (__half), packed
  const int32_t* perm;   // (P,) or nullptr
  const int32_t* offsets;// (groups + 1,) or nullptr
  float slope;           // leaky ReLU negative slope (>= 0)
  cudaStream_t stream;
  void* workspace = nullptr;  // mlp_bwd_workspace_bytes() of device memory (none if 0): the backward's; in
                              // mlp_forward (split shapes only), where the forward stores the activations
  bool stored = false;        // backward: the workspace holds a stored forward's activations (no recomputation)
  bool wgmma = false;         // forward only: the sm_90a wgmma kernel (hidden width 64; the caller checked that
                              // the GPU runs sm_90a code, kernels/bindings.cpp wgmma_built_on), else mma.sync
  bool wgmma_bwd = false;     // backward only: the same for the backward (kernels/mlp_bwd_wgmma.cuh)
  int spread = 1;             // in-block backward: blocks a group = spread x (resident blocks / groups), so that
                              // groups of unequal size (X-Trans's front classes, 4:1:4) end together (>= 1); 0: one
                              // wave of blocks the groups share by their rows (the wgmma backward with offsets:
                              // mlp_bwd_wgmma.cuh block_of_group; dw_partial must then be zeros), elsewhere as 1
};

// y (P, out) float32 = MLP(x).  With a.workspace set (hidden width 128, the
// split backward's shapes), the forward also stores every layer's activations
// and their sign bits there, for a backward with a.stored.
const char* mlp_forward(const MlpArgs& a, float* y);

// Backward with forward recomputation, or (a.stored) from the activations a
// storing forward left in a.workspace.  dy (P, out) float32 is dL/dy.
// dx (P, in) float32 receives dL/dx, or is nullptr to skip it.
// dw_partial receives per-block partial weight gradients, float32 of shape
// (groups, mlp_bwd_blocks(a), n_weights); the caller sums over the middle axis.
const char* mlp_backward(const MlpArgs& a, const float* dy, float* dx, float* dw_partial);

// Number of blocks per group that mlp_backward launches (fixes the partial
// buffer's middle dimension), in *blocks.
const char* mlp_bwd_blocks(const MlpArgs& a, int* blocks);

// Bytes of device workspace (MlpArgs / ColourArgs / FrontArgs .workspace) the
// backward of MLP `d` needs for P rows in `groups` weight sets, in *bytes:
// 0 for shapes whose backward keeps everything in shared memory (width 64),
// else the split backward's activations, dZ, tile scales and the storing
// forward's sign bits (about 2 (in + out + 2 n_hidden hidden) + n_hidden
// hidden / 8 bytes a row; mlp_core.cuh Split).
const char* mlp_bwd_workspace_bytes(const MlpDims& d, int64_t P, int groups, int64_t* bytes);

// ---------------------------------------------------------------- colour level
//
// One colour level of the KPN (DESIGN.md section 2; reference
// kpnt/ref/colour_level.py colour_level) fused around the MLP:
//  1. fmap (N, 3, h, w) = per-pixel [asinh lum, asinh chroma, noise input]
//     of D_i and its variance (kpnt/ref/features.py detail_maps): 12 bytes a
//     pixel, computed once per pixel as in the reference;
//  2. the MLP kernel gathers each pixel's 32 inputs from fmap on the 15-tap
//     diamond inside the kernel (the (P, 32) feature matrix is never written),
//     evaluates the MLP, normalises the 15 kernel logits (softmax or plain)
//     and applies them to D_i: I (N, 3, h, w), alpha = sigmoid(o_15) (N, 1, h, w);
//  3. backward: the same kernel recomputes the forward pass up to the MLP
//     outputs, forms dL/do from dL/dI, dL/dalpha and D_i (the seed's dapply),
//     and runs the MLP backward (bck, mulw) to per-block partial weight
//     gradients.
// All images are float32, contiguous, (n, channel, y, x); taps are mirrored at
// the borders without repeating the edge (kpnt/ref/pad.py fold_indices).

constexpr int kColourTaps = 15;      // the diamond (kpnt/ref/taps.py DIAMOND, raster order)
constexpr int kColourFeatures = 32;  // 15 lum + 15 chroma + noise + 1

// Tap t of the diamond: rows -2 (dx 0), -1 (dx -2..2), 0 (dx -1..1), 1 (dx -2..2), 2 (dx 0).
KPNT_HD constexpr int colour_tap_dy(int t) { return t == 0 ? -2 : t <= 5 ? -1 : t <= 8 ? 0 : t <= 13 ? 1 : 2; }
KPNT_HD constexpr int colour_tap_dx(int t) {
  return (t == 0 || t == 14) ? 0 : t <= 5 ? t - 3 : t <= 8 ? t - 7 : t - 11;
}
// The largest |dy| or |dx| of the diamond: sites this far from every edge read no mirrored tap.
constexpr int kColourRadius = 2;
constexpr bool colour_taps_within_radius() {
  for (int t = 0; t < kColourTaps; ++t)
    if (colour_tap_dy(t) < -kColourRadius || colour_tap_dy(t) > kColourRadius || colour_tap_dx(t) < -kColourRadius ||
        colour_tap_dx(t) > kColourRadius)
      return false;
  return true;
}
static_assert(colour_taps_within_radius(), "kColourRadius must bound the diamond's taps");

// Constants shared with the Python reference (passed in by kpnt/ops/_cuda/extension.py
// from kpnt.ref.features / kpnt.ref.noise, so there is one source of truth).
struct ColourFeatureConsts {
  float chroma_eps;    // CHROMA_EPS
  float noise_centre;  // NOISE_LOG_CENTRE
  float noise_scale;   // NOISE_LOG_SCALE
  int noise_input;     // feed the noise input (else 0)
};

struct ColourArgs {
  MlpDims dims;   // (32, hidden, 16, n_hidden) of a KPNT_COLOUR line of kernels/shapes.def
  int64_t N;
  int h, w;
  const float* D;   // (N, 3, h, w) detail coefficients
  const void* w16;  // packed float16 weights (one set)
  float slope;
  bool plain;       // plain normalisation instead of softmax
  float plain_eps;  // kpnt/ref/apply.py PLAIN_EPS
  ColourFeatureConsts fc;
  cudaStream_t stream;
  void* workspace = nullptr;  // backward: mlp_bwd_workspace_bytes(dims, N h w, 1)
  bool wgmma = false;         // forward: the MLP on the sm_90a wgmma kernel (MlpArgs::wgmma)
  bool wgmma_bwd = false;     // backward: the same (MlpArgs::wgmma_bwd)
};

// Forward: var (N, 3, h, w) in; fmap (N, 3, h, w), I (N, 3, h, w), alpha (N, 1, h, w) out.
const char* colour_forward(const ColourArgs& a, const float* var, float* fmap, float* I, float* alpha);

// Blocks that colour_backward launches (middle dimension of dw_partial).
const char* colour_bwd_blocks(const ColourArgs& a, int* blocks);

// Backward from fmap (the forward's), dI (N, 3, h, w), dalpha (N, 1, h, w):
// dw_partial (blocks, n_weights) float32 partial weight gradients.
const char* colour_backward(const ColourArgs& a, const float* fmap, const float* dI, const float* dalpha,
                            float* dw_partial);

// ---------------------------------------------------------------- front level
//
// The mosaic front level (DESIGN.md section 3; reference kpnt/ref/front_level.py
// front_level) fused around the grouped MLP (one weight set per site class,
// rows read through the class partition `perm` / `row_offsets`):
//  1. fmap (N, 4, H, W) = per photosite [d = x - U_c, asinh(d / sigma),
//     noise input, d asinh(d / sigma) / d d];
//  2. the grouped MLP kernel gathers each pixel's inputs (its class's
//     canonical taps, zero outside the image) inside the kernel and applies
//     the kernel in its epilogue: O = U + sigmoid(o_T) sum_t w_t d_t;
//  3. backward: the grouped MLP backward (weight gradients per class, dL/d
//     inputs into bbuf) with a head that also writes the apply path's dL/dd
//     per tap into abuf, then an adjoint kernel that gathers both onto the
//     photosites (no atomics): dL/dU = dL/dO - onehot(c) dL/dd.

// The MLP of a front line (kernels/shapes.def KPNT_FRONT) has at least T + 2
// inputs (tap SNRs, noise, 1) and K T + 1 outputs (K kernels, blend); the
// kernels read T, K and the widths from the line (kpnt/spec.py
// FrontLevelSpec.widths computes the same).

struct FrontArgs {
  MlpDims dims;               // the MLP of a KPNT_FRONT line of kernels/shapes.def
  int64_t N;
  int H, W;
  int groups;                 // site classes (weight sets)
  const float* x;             // (N, 1, H, W) mosaic
  const float* U;             // (N, 3, H, W)
  const float* S;             // (N, 3, H, W)
  const float* noise;         // (N, 2, 3) [a; b]
  const void* w16;            // (groups, n_weights) float16
  const int32_t* perm;        // (N*H*W,) rows grouped by class
  const int32_t* row_offsets; // (groups + 1,)
  int period;                 // CFA repeat P
  int taps;                   // T
  int kernels;                // 1 (shared) or 3 (per-channel), as the shapes.def line says
  const int32_t* roles;       // (P*P, 3) output channel of each kernel role (kernels == 3), else unused
  const int32_t* colour;      // (P*P,) colour of each repeat position
  const int32_t* tap_off;     // (P*P, T, 2) canonical tap offsets (dy, dx)
  const int32_t* inv;         // (P*P, inv_len, 3) (dy, dx, t): the (pixel, tap) pairs reading a photosite
  int inv_len;
  float slope;
  bool plain;
  float plain_eps;
  float var_floor;            // kpnt/ref/noise.py VAR_FLOOR
  ColourFeatureConsts fc;     // noise input constants (chroma_eps unused)
  cudaStream_t stream;
  void* workspace = nullptr;  // backward: mlp_bwd_workspace_bytes(dims, N H W, groups)
  bool wgmma = false;         // forward: the MLP on the wgmma kernel (hidden 64; the caller checked the GPU runs sm_90a)
  bool wgmma_bwd = false;     // backward: the same (MlpArgs::wgmma_bwd)
  int spread = 1;             // backward: MlpArgs::spread
};

// fmap (N, 4, H, W) and O (N, 3, H, W) out.  kernels == 3 (per-channel
// kernels: MLP outputs [r T, (r + 1) T) are the kernel of role r, 3 T the
// blend) adds role r's filtered detail to channel roles[pos][r] only.
const char* front_forward(const FrontArgs& a, float* fmap, float* O);

// Blocks per group that front_backward's MLP kernel launches.
const char* front_bwd_blocks(const FrontArgs& a, int* blocks);

// Lines compiled with train = 1 only (shared or per-channel kernels).
// From fmap and dO (N, 3, H, W): abuf (N*H*W, dims.out), bbuf (N*H*W, dims.in) scratch,
// dw_partial (groups, blocks, n_weights), dU (N, 3, H, W).
const char* front_backward(const FrontArgs& a, const float* fmap, const float* dO, float* abuf, float* bbuf,
                           float* dw_partial, float* dU);

// ---------------------------------------------------------------- guide block (kernels/guide_block.cu)

// One projection block of the guide, z' = relu(z + P relu(conv3x3(z, W) + b) + c),
// inference only, f16, channels-last (kernels/guide_block.cuh).
constexpr int kGuideBlockWidth = 64;  // channels in and out: the only width compiled

// The block's kernels: wgmma on Hopper (sm_90a builds only: 8 x 16 positions
// a tile, 2 warp groups), mma.sync on sm_80 and later (8 or 16 image rows a
// tile: 4 or 8 warps).
enum class GuideBlockKernel : int { kWgmma = 0, kMma8 = 1, kMma16 = 2 };

struct GuideBlockArgs {
  const void* z;     // (N, H, W, 64) float16
  void* out;         // same shape, must not overlap z
  const void* w3;    // [64][9][64] float16: (out, tap 3 dy + dx, in)
  const float* b3;   // (64,)
  const void* p;     // [64][64] float16: (out, in)
  const float* c1;   // (64,)
  int N = 0, H = 0, W = 0;
  GuideBlockKernel kernel = GuideBlockKernel::kWgmma;
  cudaStream_t stream = nullptr;
};

const char* guide_proj_block(const GuideBlockArgs& a);

// Writes 1 to the device int `flag` (on `stream`) where the current GPU runs
// this build's sm_90a code (the wgmma kernel's only target), else 0.  Callers
// ask before launching GuideBlockKernel::kWgmma, whose body is a trap in any
// other code; the error message, or nullptr, as the others.
const char* guide_block_wgmma_query(int* flag, cudaStream_t stream);

// ---------------------------------------------------------------- up_block (kernels/up_block.cu)

// kpnt.ref.up_block.up_block's forward (inference): the colour base (N, 3, h, w)
// float32 to (N, 3, H, W), each channel interpolated separably from its own
// sample positions, rows then columns, with the reference's index and weight
// tables and its roundings (a bitwise twin of the reference's result).
// Two kernels compute the same values: kFlat (one value a thread) and
// kColumns (a thread a column, rows in a loop), which kpnt launches: 0.294 ms
// against kFlat's 0.550 for a 24-MP image (H100, session 28).
enum class UpBlockKernel : int { kFlat = 0, kColumns = 1 };

struct UpBlockArgs {
  const float* o = nullptr;      // (N, 3, h, w) contiguous
  float* out = nullptr;          // (N, 3, H, W) contiguous, not overlapping o
  const int64_t* row_i0 = nullptr;  // (3, H): per channel and output row, the two source rows
  const int64_t* row_i1 = nullptr;
  const float* row_f = nullptr;     // (3, H): the second source row's weight
  const int64_t* col_i0 = nullptr;  // (3, W): the same for columns
  const int64_t* col_i1 = nullptr;
  const float* col_f = nullptr;
  int64_t N = 0, h = 0, w = 0, H = 0, W = 0;
  UpBlockKernel kernel = UpBlockKernel::kFlat;
  cudaStream_t stream = nullptr;
};

const char* up_block_forward(const UpBlockArgs& a);
// Its adjoint (backward): `o` is the fine gradient (N, 3, H, W), `out` the coarse one (N, 3, h, w), H = b h and
// W = b w for the CFA's block b; `kernel` unused.
const char* up_block_adjoint(const UpBlockArgs& a);

// ---------------------------------------------------------------- guide finish (kernels/guide_finish.cu)

// kpnt.ref.guide.finish (inference): out = U + crop(pixel_shuffle(float(r) * s, Q)),
// r (N, 3 Q^2, h, w) float16 or float32 in any layout (element strides),
// s (N, 1, h, w) float32 (strides), U and out (N, 3, H, W) float32 contiguous;
// (top, left) the crop's origin in the shuffled image.  Bitwise the reference.
struct GuideFinishArgs {
  const float* U = nullptr;
  const void* r = nullptr;
  bool r_half = true;
  int64_t r_stride[4] = {0, 0, 0, 0};
  const float* s = nullptr;
  int64_t s_stride[4] = {0, 0, 0, 0};
  float* out = nullptr;  // must not overlap U, r or s
  int N = 0, H = 0, W = 0, Q = 1, top = 0, left = 0;  // 3 N <= 65535; H + top, W + left < 2^31
  cudaStream_t stream = nullptr;
};

const char* guide_finish(const GuideFinishArgs& a);

// ---------------------------------------------------------------- guide start (kernels/guide_start.cu)

// kpnt.ref.guide.start (inference): z (N, h, w, Q^2 + 4) float16 channels-last and s (N, 1, h, w) float32
// from x (N, 1, H, W) and U (N, 3, H, W) float32 contiguous; h = (top + H + bottom) / Q, w likewise.
struct GuideStartArgs {
  const float* x = nullptr;
  const float* U = nullptr;
  const float* a = nullptr;   // (N,) the noise's mean a over the colours
  const float* b = nullptr;   // (N,)
  const int32_t* pattern = nullptr;  // (P, P) colour of each repeat position
  void* z = nullptr;  // float16 (N, h, w, Q^2 + 4)
  float* s = nullptr;
  int N = 0, H = 0, W = 0, h = 0, w = 0, Q = 1, P = 1, top = 0, left = 0;
  bool skip = false;
  float mean_factor = 1.f / 3.f;  // PyTorch's mean factor (outputs / inputs, in float)
  float brightness_floor = 0.f, sigma_floor = 0.f, feature_centre = 0.f, inv_feature_scale = 1.f;
  cudaStream_t stream = nullptr;
};

const char* guide_start(const GuideStartArgs& a);

// ---------------------------------------------------------------- pyramid (kernels/pyramid.cu)

// kpnt.ref.pyramid.down / up, float32 contiguous planes: down reads the fine
// (planes, H, W) and writes the coarse (planes, h, w); up the other way; up's
// adjoint (its backward) reads a fine gradient and writes the coarse one;
// h = ceil(H / 2), w = ceil(W / 2).  row_fold (H + 4,) and col_fold (W + 4,):
// kpnt.ref.pad.fold_indices(n, 2, 2) (down only).
struct PyramidArgs {
  const float* in = nullptr;
  float* out = nullptr;
  const int64_t* row_fold = nullptr;
  const int64_t* col_fold = nullptr;
  int64_t planes = 0;
  int H = 0, W = 0, h = 0, w = 0;
  cudaStream_t stream = nullptr;
};

// ---------------------------------------------------------------- guide training (kernels/guide_train.cu)

// The guide network's elementwise passes while it trains (kpnt.ops._cuda.guide_train), on row-major (M, C)
// float32 or bfloat16 matrices (channels-last activations), C a multiple of 8, every pointer 16-byte aligned:
//   kBiasRelu:    out = relu(in + bias[c] (+ z));  out may be in (in place);
//   kReluGradSum: out = (in (+ z)) * (y > 0), and partial[b, c] = the sum of out's column c over block b's rows
//                 (`blocks` blocks, chosen by the caller; it adds the rows of `partial`).
// A block is 256 threads or fewer: C / 8 threads a row, max(1, 256 / (C / 8)) rows a pass.
enum class GuideEltOp { kBiasRelu, kReluGradSum };
struct GuideEltArgs {
  GuideEltOp op = GuideEltOp::kBiasRelu;
  bool bf16 = false;
  const void* in = nullptr;
  const void* z = nullptr;   // optional second operand (nullptr: none)
  const void* y = nullptr;   // kReluGradSum: the ReLU's output
  const float* bias = nullptr;  // kBiasRelu: (C,) float32
  void* out = nullptr;
  float* partial = nullptr;  // kReluGradSum: (blocks, C) float32
  int64_t M = 0;
  int C = 0, blocks = 1;
  cudaStream_t stream = nullptr;
};

const char* guide_elementwise(const GuideEltArgs& a);

// The projection block's backward through its 1x1 convolution, bfloat16 or float32 (the products on TF32) with C in
// {32, 64, 128} (the rows of (M, C) matrices as above; P the 1x1 weights (C, C) row-major
// [out][in], in the activations' dtype):
//   gm = (g (+ p)) * (y > 0);  gh = (gm P) * (h > 0);
//   partial[b] = [sum of gm's columns (C) | sum of gh's columns (C) | gm^T h (C x C, [out][in])] over block b's rows.
// One pass where the written-out backward makes three and a GEMM each for dh and dP (session 32).
struct GuideProjBwdArgs {
  const void* g = nullptr;
  const void* p = nullptr;   // optional (nullptr: none)
  const void* y = nullptr;
  const void* h = nullptr;
  const void* P = nullptr;
  void* gm = nullptr;
  void* gh = nullptr;
  float* partial = nullptr;  // (blocks, 2 C + C^2) float32
  int64_t M = 0;
  int C = 0, blocks = 1;
  cudaStream_t stream = nullptr;
};

// Blocks the launch for (C, M) uses (the rows of `partial`), into *blocks; nullptr, or an error message.  f32: the
// activations and P are float32 (the products on TF32), else bfloat16.
const char* guide_proj_backward_blocks(int C, int64_t M, bool f32, int* blocks);
const char* guide_proj_backward(const GuideProjBwdArgs& a, bool f32);

// The projection block's 1x1 convolution and its epilogue, the same dtypes and widths (rows and P as above, the
// bias c float32 (C,)):  out = relu(h P^T + c + z), rounded once (session 33: the 1x1's GEMM and the bias_relu
// pass after it in one pass, the product never stored).  With h_bias (float32 (C,)) `h` holds the block's 3x3
// convolution's raw output and the kernel first makes it h = relu(h + h_bias), in place, as bias_relu would (the
// same arithmetic, so the same bits), then multiplies that h: the pass between the two convolutions saved.
struct GuideProjFwdArgs {
  const void* h = nullptr;
  const void* z = nullptr;
  const void* P = nullptr;
  const float* bias = nullptr;
  void* out = nullptr;
  int64_t M = 0;
  int C = 0;
  cudaStream_t stream = nullptr;
  const float* h_bias = nullptr;  // optional (nullptr: h is the block's h already)
  void* h_out = nullptr;          // with h_bias: where h goes (the caller passes `h` itself: in place)
};

const char* guide_proj_forward(const GuideProjFwdArgs& a, bool f32);

// ---------------------------------------------------------------- the guide's 3x3 weight gradient (kernels/guide_wgrad.cu)

// dW of a float32 guide's 3x3 convolution (C -> C, padding 1) on TF32: partial[b][co][ky][kx][ci] = block b's share
// of sum_p gh[p][co] z[p + (ky - 1, kx - 1)][ci]; the caller sums the `groups` rows.  gh and z channels-last
// contiguous float32 (N, H, W, C), 16-byte aligned; C 64 or 128.
struct GuideWgradArgs {
  const float* gh = nullptr;
  const float* z = nullptr;
  float* partial = nullptr;  // (groups, C, 3, 3, C) float32
  int N = 0, H = 0, W = 0, C = 0;
  int groups = 0;            // guide_wgrad_groups(C, N, H, W, wgmma)
  bool wgmma = false;        // Hopper's warp-group MMA form (a GPU that runs the build's sm_90a code)
  bool specialized = false;  // with wgmma: its warp-specialized form (a producer warp group; session 43, unrun)
  cudaStream_t stream = nullptr;
};

const char* guide_wgrad_groups(int C, int N, int H, int W, bool wgmma, int* groups);
const char* guide_wgrad(const GuideWgradArgs& a);

// ---------------------------------------------------------------- training's update (kernels/train_update.cu)

// The graphed training step's finite check, global gradient-norm clip and Adam with its masked commit
// (kpnt.ops._cuda.train_update).  Tensors go in tables of up to kUpdateTableSize (a table is one launch's
// argument, under 4 KB); every tensor contiguous float32 of n elements, its step count a float32 scalar.
constexpr int kUpdateTableSize = 64;
struct UpdateTensor {
  float* p = nullptr;        // the parameter
  const float* g = nullptr;  // its gradient
  float* m = nullptr;        // Adam's exp_avg
  float* v = nullptr;        // Adam's exp_avg_sq
  float* step = nullptr;     // Adam's step count (float32 scalar on the device)
  int64_t n = 0;
};
struct UpdateTable {
  UpdateTensor t[kUpdateTableSize];
  int chunk_start[kUpdateTableSize + 1] = {};  // prefix sums of update_chunks(t[i].n): a block per chunk
  int count = 0;
};
struct UpdateHyper {
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f, weight_decay = 0.f;
};

// Blocks (chunks) a tensor of n elements takes.
int update_chunks(int64_t n);
// Rows [sum of squares, non-finite flag] of the table's gradients into partial (2 floats a chunk, in chunk order).
const char* update_stats(const UpdateTable& tab, float* partial, cudaStream_t stream);
// state = [clip coefficient, applied] from `rows` rows of partial and the loss (float32 scalar); clip <= 0: none.
const char* update_finalize(const float* partial, int rows, const float* loss, float clip, float* state,
                            cudaStream_t stream);
// When state[1] != 0: Adam on the table's tensors with the gradients times state[0] (lr a float32 scalar on the
// device), then every step count + 1; otherwise nothing is written.
const char* update_adam(const UpdateTable& tab, const float* state, const float* lr, const UpdateHyper& hp,
                        cudaStream_t stream);

const char* pyramid_down(const PyramidArgs& a);
const char* pyramid_up(const PyramidArgs& a);
const char* pyramid_up_adjoint(const PyramidArgs& a);

}  // namespace kpnt

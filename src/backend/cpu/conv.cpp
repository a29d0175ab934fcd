// 2-D convolution through oneDNN's convolution primitives (forward, backward data, backward weights), in
// PyTorch's layouts: activations NCHW, weights (C_out, C_in / groups, KH, KW). A transposed convolution is the
// same three primitives with the roles of input and output swapped (see ops::conv_transpose2d), so these three
// kernels serve both layers. Primitives are built once per shape and cached.
#include <map>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "aigc/error.h"
#include "cpu_backend.h"

namespace aigc::cpu {

namespace {

using dnnl::memory;
using Tag = memory::format_tag;
using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                       int64_t, int64_t, int64_t, int64_t, bool, bool, bool, bool>;

// Each primitive works in the layouts oneDNN picks for it (blocked, e.g. nChw16c, where that is fastest: its
// direct AVX-512 kernels instead of im2col + gemm). The user's buffers stay plain; operands whose chosen layout
// differs are converted by reorders on the way in and out. Inference may hand over activations already blocked
// (ConvShape::src_blocked / dst_blocked, the Blocked16 layout = nChw16c), which then need no reorder.
struct ConvPrims {
  memory::desc src, weights, bias, dst;  // the user's layouts
  dnnl::convolution_forward::primitive_desc fwd_pd;
  dnnl::convolution_backward_data::primitive_desc bd_pd;
  dnnl::convolution_backward_weights::primitive_desc bw_pd;
  dnnl::convolution_forward fwd;
  dnnl::convolution_backward_data bwd_data;
  dnnl::convolution_backward_weights bwd_weights;
};

struct ConvState {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
  std::map<Key, ConvPrims> cache;
  std::mutex mu;
};

ConvState& state() {
  static ConvState s;
  return s;
}

const ConvPrims& prims(const ConvShape& s, bool bias) {
  ConvState& st = state();
  std::lock_guard<std::mutex> lock(st.mu);
  Key key{s.N,           s.C_in,       s.H,     s.W,
          s.C_out,       s.KH,         s.KW,    s.stride_h,
          s.stride_w,    s.pad_h,      s.pad_w, s.dil_h,
          s.dil_w,       s.groups,     bias,    matmul_precision() == MatmulPrecision::BF16,
          s.src_blocked, s.dst_blocked};
  auto it = st.cache.find(key);
  if (it != st.cache.end()) return it->second;
  const int64_t G = s.groups, OH = s.out_h(), OW = s.out_w();
  const auto f32 = memory::data_type::f32;
  ConvPrims p;
  p.src = memory::desc({s.N, s.C_in, s.H, s.W}, f32, s.src_blocked ? Tag::nChw16c : Tag::nchw);
  p.dst = memory::desc({s.N, s.C_out, OH, OW}, f32, s.dst_blocked ? Tag::nChw16c : Tag::nchw);
  const memory::dims wdims =
      G == 1 ? memory::dims{s.C_out, s.C_in, s.KH, s.KW} : memory::dims{G, s.C_out / G, s.C_in / G, s.KH, s.KW};
  p.weights = memory::desc(wdims, f32, G == 1 ? Tag::oihw : Tag::goihw);
  p.bias = bias ? memory::desc({s.C_out}, f32, Tag::x) : memory::desc();
  // Mixed precision (--precision bf16): every operand a convolution reads is rounded to bf16 by the reorder that
  // brings it into the primitive's layout; what it writes (output, gradients) stays f32.
  const auto in_type = matmul_precision() == MatmulPrecision::BF16 && bf16_is_native() ? memory::data_type::bf16 : f32;
  const memory::desc src_in({s.N, s.C_in, s.H, s.W}, in_type, Tag::any),
      src_out({s.N, s.C_in, s.H, s.W}, f32, Tag::any), dst_in({s.N, s.C_out, OH, OW}, in_type, Tag::any),
      dst_out({s.N, s.C_out, OH, OW}, f32, Tag::any), w_in(wdims, in_type, Tag::any), w_out(wdims, f32, Tag::any);
  // oneDNN counts dilation from 0 (PyTorch's dilation - 1) and wants the right/bottom padding that makes the
  // output size come out exactly (PyTorch drops the remainder of a stride that does not fit).
  memory::dims strides{s.stride_h, s.stride_w}, dil{s.dil_h - 1, s.dil_w - 1}, pad_l{s.pad_h, s.pad_w};
  memory::dims pad_r{(OH - 1) * s.stride_h + s.dil_h * (s.KH - 1) + 1 - s.H - s.pad_h,
                     (OW - 1) * s.stride_w + s.dil_w * (s.KW - 1) + 1 - s.W - s.pad_w};
  // auto: oneDNN picks Winograd F(4x4, 3x3) for 3x3 stride-1 convolutions where it is faster (fewer
  // multiplications; the parity tests bound its rounding), direct kernels elsewhere.
  auto algo = dnnl::algorithm::convolution_auto;
  dnnl::primitive_attr attr;  // scratch space comes from aigc's buffer cache (see scratch())
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  p.fwd_pd = dnnl::convolution_forward::primitive_desc(
      dnnl::convolution_forward::desc(dnnl::prop_kind::forward_training, algo, src_in, w_in, p.bias, dst_out, strides,
                                      dil, pad_l, pad_r),
      attr, st.engine);
  p.fwd = dnnl::convolution_forward(p.fwd_pd);
  if (s.src_blocked || s.dst_blocked)  // blocked tensors are inference only: no backward passes to build
    return st.cache.emplace(key, std::move(p)).first->second;
  p.bd_pd = dnnl::convolution_backward_data::primitive_desc(
      dnnl::convolution_backward_data::desc(algo, src_out, w_in, dst_in, strides, dil, pad_l, pad_r), attr, st.engine,
      p.fwd_pd);
  p.bw_pd = dnnl::convolution_backward_weights::primitive_desc(
      dnnl::convolution_backward_weights::desc(algo, src_in, w_out, p.bias, dst_in, strides, dil, pad_l, pad_r), attr,
      st.engine, p.fwd_pd);
  p.bwd_data = dnnl::convolution_backward_data(p.bd_pd);
  p.bwd_weights = dnnl::convolution_backward_weights(p.bw_pd);
  return st.cache.emplace(key, std::move(p)).first->second;
}

memory mem(const memory::desc& d, const float* ptr) { return memory(d, state().engine, const_cast<float*>(ptr)); }

// Temporary buffers (converted operands, oneDNN's scratchpad) from the tensor allocator's cache: the same sizes
// recur every step, and fresh pages from the kernel would cost page faults each time. keep holds them until the
// primitive has run.
memory scratch(const memory::desc& d, std::vector<Tensor>& keep) {
  keep.push_back(Tensor::empty({int64_t((d.get_size() + 3) / 4)}));
  return mem(d, keep.back().f32());
}

// The user's plain buffer as the layout a primitive wants: the buffer itself, or a reordered copy.
memory input(const memory::desc& user, const memory::desc& want, const float* ptr, std::vector<Tensor>& keep) {
  memory u = mem(user, ptr);
  if (user == want) return u;
  memory m = scratch(want, keep);
  dnnl::reorder(u, m).execute(state().stream, u, m);
  return m;
}

// Where a primitive writes an output: straight into dst when the layouts agree and nothing is accumulated,
// else a buffer of the wanted layout that deliver() converts into dst.
memory output(const memory::desc& user, const memory::desc& want, float* dst, bool accumulate,
              std::vector<Tensor>& keep) {
  return user == want && !accumulate ? mem(user, dst) : scratch(want, keep);
}

void add_into(float* dst, const float* src, int64_t n, bool accumulate) {
  if (accumulate) {
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; i++) dst[i] += src[i];
  } else {
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; i++) dst[i] = src[i];
  }
}

// dst (user layout) = or += the primitive's output m.
void deliver(const memory& m, const memory::desc& user, float* dst, bool accumulate) {
  const float* data = static_cast<const float*>(m.get_data_handle());
  if (data == dst) return;  // written in place
  const int64_t n = int64_t(user.get_size() / sizeof(float));
  if (m.get_desc() == user) {
    state().stream.wait();
    add_into(dst, data, n, accumulate);
    return;
  }
  Tensor plain = accumulate ? Tensor::empty({n}) : Tensor();
  memory u = mem(user, accumulate ? plain.f32() : dst);
  dnnl::reorder(m, u).execute(state().stream, const_cast<memory&>(m), u);
  state().stream.wait();
  if (accumulate) add_into(dst, plain.f32(), n, true);
}

// A convolution whose kernel covers the whole unpadded input (one output pixel) is a dense layer over the
// flattened image: the discriminator's last layer, and (as the adjoint) the generator's first. oneDNN's
// im2col path is very slow for it, so it runs as plain matrix products.
bool is_dense(const ConvShape& s) {
  return s.KH == s.H && s.KW == s.W && s.pad_h == 0 && s.pad_w == 0 && s.groups == 1 && s.dil_h == 1 && s.dil_w == 1 &&
         s.out_h() == 1 && s.out_w() == 1;
}

}  // namespace

void CpuBackend::conv2d_forward(float* out, const float* inp, const float* w, const float* bias, const ConvShape& s,
                                bool accumulate) {
  if (is_dense(s) && !s.src_blocked && !s.dst_blocked) {  // out (N, C_out) = inp (N, K) W^T (+ bias), K = C_in H W
    const int64_t K = s.C_in * s.H * s.W;
    if (accumulate && bias) channel_bias_add(out, out, bias, s.N, s.C_out, 1);
    if (!accumulate && bias) {
      linear_forward(out, inp, w, bias, s.N, K, s.C_out);
      return;
    }
    gemm(false, true, s.N, s.C_out, K, 1.0f, inp, K, w, K, accumulate ? 1.0f : 0.0f, out, s.C_out);
    return;
  }
  const ConvPrims& p = prims(s, bias != nullptr);
  ConvState& st = state();
  std::vector<Tensor> keep;
  memory dst = output(p.dst, p.fwd_pd.dst_desc(), out, accumulate, keep);
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, input(p.src, p.fwd_pd.src_desc(), inp, keep)},
                                       {DNNL_ARG_WEIGHTS, input(p.weights, p.fwd_pd.weights_desc(), w, keep)},
                                       {DNNL_ARG_DST, dst},
                                       {DNNL_ARG_SCRATCHPAD, scratch(p.fwd_pd.scratchpad_desc(), keep)}};
  if (bias) args.insert({DNNL_ARG_BIAS, mem(p.bias, bias)});
  p.fwd.execute(st.stream, args);
  deliver(dst, p.dst, out, accumulate);
  st.stream.wait();
}

namespace {

// The two backward passes on primitives p, with diff_dst already in each primitive's layout.
void backward_data(const ConvPrims& p, float* dinp, const memory& ddst, const float* w, bool accumulate) {
  ConvState& st = state();
  std::vector<Tensor> keep;
  memory dsrc = output(p.src, p.bd_pd.diff_src_desc(), dinp, accumulate, keep);
  p.bwd_data.execute(st.stream, {{DNNL_ARG_DIFF_DST, ddst},
                                 {DNNL_ARG_WEIGHTS, input(p.weights, p.bd_pd.weights_desc(), w, keep)},
                                 {DNNL_ARG_DIFF_SRC, dsrc},
                                 {DNNL_ARG_SCRATCHPAD, scratch(p.bd_pd.scratchpad_desc(), keep)}});
  deliver(dsrc, p.src, dinp, accumulate);
  st.stream.wait();
}

void backward_weights(const ConvPrims& p, float* dw, float* dbias, const memory& ddst, const float* inp,
                      int64_t C_out) {
  ConvState& st = state();
  std::vector<Tensor> keep;
  memory dwm = scratch(p.bw_pd.diff_weights_desc(), keep);  // always accumulated into dw
  std::vector<float> tb(dbias ? size_t(C_out) : 0);
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, input(p.src, p.bw_pd.src_desc(), inp, keep)},
                                       {DNNL_ARG_DIFF_DST, ddst},
                                       {DNNL_ARG_DIFF_WEIGHTS, dwm},
                                       {DNNL_ARG_SCRATCHPAD, scratch(p.bw_pd.scratchpad_desc(), keep)}};
  if (dbias) args.insert({DNNL_ARG_DIFF_BIAS, mem(p.bias, tb.data())});
  p.bwd_weights.execute(st.stream, args);
  if (dw) deliver(dwm, p.weights, dw, true);
  st.stream.wait();
  if (dbias) add_into(dbias, tb.data(), C_out, true);
}

}  // namespace

void CpuBackend::conv2d_backward_data(float* dinp, const float* dout, const float* w, const ConvShape& s,
                                      bool accumulate) {
  AIGC_CHECK(!s.src_blocked && !s.dst_blocked, "conv2d: the backward passes take plain tensors only");
  if (is_dense(s)) {  // dinp (N, K) (+)= dout (N, C_out) W (C_out, K)
    const int64_t K = s.C_in * s.H * s.W;
    gemm(false, false, s.N, K, s.C_out, 1.0f, dout, s.C_out, w, K, accumulate ? 1.0f : 0.0f, dinp, K);
    return;
  }
  const ConvPrims& p = prims(s, false);
  std::vector<Tensor> keep;
  backward_data(p, dinp, input(p.dst, p.bd_pd.diff_dst_desc(), dout, keep), w, accumulate);
}

void CpuBackend::conv2d_backward_weights(float* dw, float* dbias, const float* dout, const float* inp,
                                         const ConvShape& s) {
  AIGC_CHECK(!s.src_blocked && !s.dst_blocked, "conv2d: the backward passes take plain tensors only");
  if (is_dense(s)) {  // dW (C_out, K) += dout^T (C_out, N) inp (N, K); dbias += column sums of dout
    const int64_t K = s.C_in * s.H * s.W;
    if (dw) gemm(true, false, s.C_out, K, s.N, 1.0f, dout, s.C_out, inp, K, 1.0f, dw, K);
    if (dbias) channel_bias_backward(dbias, dout, s.N, s.C_out, 1);
    return;
  }
  const ConvPrims& p = prims(s, dbias != nullptr);
  std::vector<Tensor> keep;
  backward_weights(p, dw, dbias, input(p.dst, p.bw_pd.diff_dst_desc(), dout, keep), inp, s.C_out);
}

// Both passes, converting dout once when both primitives want the same layout (the usual case). An assigned dinp
// (the first gradient to reach the input) is written straight by the primitive, or by one reorder.
void CpuBackend::conv2d_backward(float* dinp, float* dw, float* dbias, const float* dout, const float* inp,
                                 const float* w, const ConvShape& s, bool dinp_accumulate) {
  AIGC_CHECK(!s.src_blocked && !s.dst_blocked, "conv2d: the backward passes take plain tensors only");
  if (is_dense(s) || !dinp || !(dw || dbias)) {
    if (dinp) conv2d_backward_data(dinp, dout, w, s, dinp_accumulate);
    if (dw || dbias) conv2d_backward_weights(dw, dbias, dout, inp, s);
    return;
  }
  const ConvPrims& p = prims(s, dbias != nullptr);
  std::vector<Tensor> keep;
  memory dd = input(p.dst, p.bd_pd.diff_dst_desc(), dout, keep);
  backward_data(p, dinp, dd, w, dinp_accumulate);
  const bool same = p.bw_pd.diff_dst_desc() == p.bd_pd.diff_dst_desc();
  backward_weights(p, dw, dbias, same ? dd : input(p.dst, p.bw_pd.diff_dst_desc(), dout, keep), inp, s.C_out);
}

void CpuBackend::channel_bias_add(float* out, const float* src, const float* bias, int64_t N, int64_t C, int64_t HW) {
#pragma omp parallel for schedule(static)
  for (int64_t nc = 0; nc < N * C; nc++) {
    float* o = out + nc * HW;
    const float* x = src + nc * HW;
    const float bc = bias[nc % C];
#pragma omp simd
    for (int64_t i = 0; i < HW; i++) o[i] = x[i] + bc;
  }
}

// Threads own channels, and each channel is summed in a fixed order: deterministic.
void CpuBackend::channel_bias_backward(float* dbias, const float* dout, int64_t N, int64_t C, int64_t HW) {
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < C; c++) {
    double s = 0;
    for (int64_t n = 0; n < N; n++) {
      const float* d = dout + (n * C + c) * HW;
      float part = 0.0f;
#pragma omp simd reduction(+ : part)
      for (int64_t i = 0; i < HW; i++) part += d[i];
      s += part;
    }
    dbias[c] += float(s);
  }
}

}  // namespace aigc::cpu

// The kernel table's names, and what the host backends (cpu, reference) run.
#include <cstring>

#include "aigc/backend.h"

namespace aigc {

const std::vector<const char*>& backend_kernels() {
  static const std::vector<const char*> names = {"gemm",
                                                 "linear_forward",
                                                 "linear_backward",
                                                 "linear_forward_bf16w",
                                                 "linear_forward_quant",
                                                 "conv2d_forward",
                                                 "conv2d_backward_data",
                                                 "conv2d_backward_weights",
                                                 "conv2d_backward",
                                                 "channel_bias_add",
                                                 "channel_bias_backward",
                                                 "embedding_forward",
                                                 "embedding_backward",
                                                 "convert_f32_to_bf16",
                                                 "add_forward",
                                                 "accumulate",
                                                 "copy",
                                                 "layernorm_forward",
                                                 "layernorm_backward",
                                                 "rmsnorm_forward",
                                                 "rmsnorm_backward",
                                                 "swiglu_forward",
                                                 "swiglu_backward",
                                                 "rope_qkv_forward",
                                                 "rope_qkv_backward",
                                                 "gelu_forward",
                                                 "gelu_backward",
                                                 "relu_forward",
                                                 "relu_backward",
                                                 "leaky_relu_forward",
                                                 "leaky_relu_backward",
                                                 "tanh_forward",
                                                 "tanh_backward",
                                                 "sigmoid_forward",
                                                 "sigmoid_backward",
                                                 "batchnorm_forward",
                                                 "batchnorm_backward",
                                                 "batchnorm_update_running",
                                                 "concat_channels_forward",
                                                 "concat_channels_backward",
                                                 "bce_with_logits_forward",
                                                 "bce_with_logits_backward",
                                                 "silu_forward",
                                                 "silu_backward",
                                                 "groupnorm_forward",
                                                 "groupnorm_backward",
                                                 "upsample_nearest_forward",
                                                 "upsample_nearest_backward",
                                                 "groupnorm_forward_blocked16",
                                                 "upsample_nearest_blocked16",
                                                 "add_channelwise_blocked16",
                                                 "transpose_last2",
                                                 "timestep_embedding",
                                                 "combine_rows",
                                                 "mse_forward",
                                                 "mse_backward",
                                                 "clamp",
                                                 "ema_update",
                                                 "dropout_forward",
                                                 "mul_backward",
                                                 "attention_forward",
                                                 "attention_backward",
                                                 "attention_cached",
                                                 "attention_decode",
                                                 "cross_entropy_forward",
                                                 "cross_entropy_backward",
                                                 "sum_squares",
                                                 "scale",
                                                 "all_finite",
                                                 "adam_update",
                                                 "sgd_update"};
  return names;
}

bool host_backend_supports(const char* kernel, DType dtype) {
  bool known = false;
  for (const char* k : backend_kernels()) known = known || std::strcmp(k, kernel) == 0;
  if (!known) return false;
  switch (dtype) {
    case DType::F32:
      return true;    // every kernel computes in fp32
    case DType::I32:  // token ids, labels, cache slots and positions
      for (const char* k : {"embedding_forward", "embedding_backward", "cross_entropy_forward",
                            "cross_entropy_backward", "attention_decode", "rope_qkv_forward", "rope_qkv_backward"})
        if (std::strcmp(k, kernel) == 0) return true;
      return false;
    case DType::BF16:  // bf16 weights for inference, and the conversion that makes them
      return std::strcmp(kernel, "linear_forward_bf16w") == 0 || std::strcmp(kernel, "convert_f32_to_bf16") == 0;
    case DType::F16:  // KV caches in half precision
      return std::strcmp(kernel, "attention_cached") == 0 || std::strcmp(kernel, "attention_decode") == 0;
    case DType::Q8_0:  // quantized weights for inference
    case DType::Q4_0:
    case DType::Q4_1:
      return std::strcmp(kernel, "linear_forward_quant") == 0;
    default:
      return false;
  }
}

}  // namespace aigc

// Image datasets for the image models: MNIST-style IDX files (gzip-compressed or not), CIFAR-10 binary batches,
// and shuffled minibatches scaled to [-1, 1]. Every reader validates sizes before use and names the file and
// the field when something is wrong.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "aigc/batch_cursor.h"
#include "aigc/tensor.h"

namespace aigc {

// Images in memory as bytes, (n, channels, height, width), with optional labels.
struct ImageSet {
  int64_t n = 0, channels = 0, height = 0, width = 0;
  std::vector<uint8_t> pixels;           // n * channels * height * width
  std::vector<int32_t> labels;           // n, or empty when unlabeled
  std::vector<std::string> class_names;  // one per label value, when known
  int64_t image_size() const { return channels * height * width; }
};

// The whole file, gunzipped when it starts with the gzip magic. Refuses outputs above max_bytes.
std::string read_file_maybe_gzip(const std::string& path, size_t max_bytes = size_t(1) << 31);

// An IDX image file (magic 0x803: n x rows x cols bytes) and optionally its IDX label file (magic 0x801).
ImageSet read_idx(const std::string& images_path, const std::string& labels_path = "");

// CIFAR-10 binary batches: records of 1 label byte + 3 x 32 x 32 pixel bytes.
ImageSet read_cifar10(const std::vector<std::string>& batch_paths);

// A folder of PNG/JPEG files, directly inside (unlabeled) or in one subfolder per class; each image is
// center-cropped and resized to size x size (1 channel if every file is grayscale, else 3).
ImageSet read_image_folder(const std::string& dir, int64_t size = 32);

// A dataset by directory: MNIST-style IDX files ({train,t10k}-images-idx3-ubyte[.gz] + labels) or CIFAR-10
// batches (data_batch_*.bin / test_batch.bin) or, failing both, a folder of images (read_image_folder, 32x32,
// the same images for either split). split is "train" or "test". "fashion-mnist" names Debian's
// dataset-fashion-mnist (installed by scripts/setup.sh), whose class names are attached.
ImageSet load_image_dataset(const std::string& dir_or_name, const std::string& split);

// Fashion-MNIST's ten class names, in label order.
const std::vector<std::string>& fashion_mnist_classes();

// Deterministic shuffled minibatches: images as floats in [-1, 1], (B, C, H, W), with their labels (all 0 when the
// set is unlabeled: to a class-conditional generator it is then one class). Each epoch is a permutation drawn
// from (seed, epoch); global batch g (BatchCursor: which one a rank takes) is entries k * B ... k * B + B - 1 of
// epoch g / batches_per_epoch's order, k = g % batches_per_epoch, so ranks never overlap, together they see what
// one process accumulating their micro-batches sees, and `position` alone resumes.
class ImageLoader {
 public:
  ImageLoader(const ImageSet& data, int64_t batch_size, uint64_t seed, bool hflip = false, int rank = 0, int world = 1,
              int64_t accum = 1);
  void next(Tensor& images, std::vector<int32_t>& labels);  // images is (B, C, H, W) f32
  int64_t position() const { return cursor_.position(); }
  void set_position(int64_t p) { cursor_.set_position(p); }
  int64_t last_index() const { return cursor_.last(); }  // the global index of the batch next() gave last
  int64_t batches_per_epoch() const { return int64_t(order_.size()) / batch_; }

 private:
  const ImageSet& data_;
  int64_t batch_;
  uint64_t seed_;
  bool hflip_;
  BatchCursor cursor_;
  std::vector<int64_t> order_;
  int64_t order_epoch_ = -1;  // the epoch order_ was drawn for
};

}  // namespace aigc

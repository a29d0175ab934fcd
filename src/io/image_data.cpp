#include "aigc/image_data.h"

#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "aigc/error.h"
#include "aigc/file_util.h"
#include "aigc/rng.h"

namespace aigc {

namespace fs = std::filesystem;

std::string read_file_maybe_gzip(const std::string& path, size_t max_bytes) {
  std::string raw = read_file(path);
  if (raw.size() < 2 || uint8_t(raw[0]) != 0x1f || uint8_t(raw[1]) != 0x8b) return raw;
  z_stream zs{};
  AIGC_CHECK(inflateInit2(&zs, 16 + MAX_WBITS) == Z_OK, "'" + path + "': zlib could not start");
  zs.next_in = reinterpret_cast<Bytef*>(raw.data());
  zs.avail_in = uInt(raw.size());
  std::string out;
  int rc = Z_OK;
  while (rc == Z_OK) {
    if (out.size() >= max_bytes) {
      inflateEnd(&zs);
      fail("'" + path + "': decompresses to more than " + std::to_string(max_bytes) + " bytes");
    }
    size_t old = out.size();
    out.resize(std::min(max_bytes, old + (size_t(1) << 22)));
    zs.next_out = reinterpret_cast<Bytef*>(out.data() + old);
    zs.avail_out = uInt(out.size() - old);
    rc = inflate(&zs, Z_NO_FLUSH);
    out.resize(out.size() - zs.avail_out);
    if (rc == Z_BUF_ERROR && zs.avail_in == 0) break;  // input ended before the stream did
  }
  inflateEnd(&zs);
  AIGC_CHECK(rc == Z_STREAM_END, "'" + path + "': the gzip data is truncated or corrupt (zlib " +
                                     (zs.msg ? std::string(zs.msg) : std::to_string(rc)) + ")");
  return out;
}

namespace {

uint32_t be32(const std::string& s, size_t off) {
  return (uint32_t(uint8_t(s[off])) << 24) | (uint32_t(uint8_t(s[off + 1])) << 16) |
         (uint32_t(uint8_t(s[off + 2])) << 8) | uint32_t(uint8_t(s[off + 3]));
}

// Parses an IDX header of unsigned bytes with `dims` dimensions; returns the sizes after checking the length.
std::vector<int64_t> idx_dims(const std::string& data, const std::string& path, int dims) {
  AIGC_CHECK(data.size() >= size_t(4 + 4 * dims), "'" + path + "': too short for an IDX header");
  uint32_t magic = be32(data, 0);
  uint32_t want = 0x800u | uint32_t(dims);
  AIGC_CHECK(
      magic == want, "'" + path + "': bad IDX magic 0x" +
                         [&] {
                           char b[16];
                           std::snprintf(b, sizeof b, "%08x", magic);
                           return std::string(b);
                         }() +
                         ", expected unsigned bytes with " + std::to_string(dims) + " dimensions (0x" +
                         std::to_string(800 + dims) + ")");
  std::vector<int64_t> d;
  uint64_t total = 1;
  for (int i = 0; i < dims; i++) {
    d.push_back(int64_t(be32(data, size_t(4 + 4 * i))));
    AIGC_CHECK(d.back() > 0 && d.back() < (int64_t(1) << 28),
               "'" + path + "': dimension " + std::to_string(i) + " is " + std::to_string(d.back()));
    total *= uint64_t(d.back());
    AIGC_CHECK(total < (uint64_t(1) << 36), "'" + path + "': the declared size is absurd");
  }
  AIGC_CHECK(data.size() == size_t(4 + 4 * dims) + total, "'" + path + "': header declares " + std::to_string(total) +
                                                              " bytes of data, the file holds " +
                                                              std::to_string(data.size() - size_t(4 + 4 * dims)));
  return d;
}

}  // namespace

ImageSet read_idx(const std::string& images_path, const std::string& labels_path) {
  std::string img = read_file_maybe_gzip(images_path);
  std::vector<int64_t> d = idx_dims(img, images_path, 3);
  ImageSet s;
  s.n = d[0], s.channels = 1, s.height = d[1], s.width = d[2];
  s.pixels.assign(img.begin() + 16, img.end());
  if (!labels_path.empty()) {
    std::string lab = read_file_maybe_gzip(labels_path);
    std::vector<int64_t> ld = idx_dims(lab, labels_path, 1);
    AIGC_CHECK(ld[0] == s.n, "'" + labels_path + "' has " + std::to_string(ld[0]) + " labels but '" + images_path +
                                 "' has " + std::to_string(s.n) + " images");
    for (size_t i = 8; i < lab.size(); i++) s.labels.push_back(int32_t(uint8_t(lab[i])));
  }
  return s;
}

ImageSet read_cifar10(const std::vector<std::string>& batch_paths) {
  constexpr int64_t kRecord = 1 + 3 * 32 * 32;
  ImageSet s;
  s.channels = 3, s.height = 32, s.width = 32;
  s.class_names = {"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"};
  for (const std::string& p : batch_paths) {
    std::string data = read_file(p);
    AIGC_CHECK(!data.empty() && data.size() % kRecord == 0, "'" + p + "': " + std::to_string(data.size()) +
                                                                " bytes is not a whole number of CIFAR-10 records (" +
                                                                std::to_string(kRecord) + " bytes each)");
    for (size_t off = 0; off < data.size(); off += kRecord) {
      int32_t label = int32_t(uint8_t(data[off]));
      AIGC_CHECK(label < 10, "'" + p + "': record " + std::to_string(off / kRecord) + " has label " +
                                 std::to_string(label) + " (CIFAR-10 has 10 classes)");
      s.labels.push_back(label);
      s.pixels.insert(s.pixels.end(), data.begin() + int64_t(off) + 1, data.begin() + int64_t(off + kRecord));
      s.n++;
    }
  }
  return s;
}

const std::vector<std::string>& fashion_mnist_classes() {
  static const std::vector<std::string> names = {"t-shirt", "trouser", "pullover", "dress", "coat",
                                                 "sandal",  "shirt",   "sneaker",  "bag",   "ankle-boot"};
  return names;
}

ImageSet load_image_dataset(const std::string& dir_or_name, const std::string& split) {
  AIGC_CHECK(split == "train" || split == "test", "image dataset split must be train or test, not '" + split + "'");
  const bool fashion = dir_or_name == "fashion-mnist";
  const fs::path dir = fashion ? fs::path("/usr/share/datasets/fashion-mnist") : fs::path(dir_or_name);
  AIGC_CHECK(fs::is_directory(dir), fashion ? std::string("Fashion-MNIST is not installed (Debian package "
                                                          "dataset-fashion-mnist); run scripts/setup.sh")
                                            : "image dataset '" + dir.string() + "' is not a directory");
  auto find = [&](const std::string& stem) -> std::string {
    for (const char* ext : {"", ".gz"})
      if (fs::exists(dir / (stem + ext))) return (dir / (stem + ext)).string();
    return "";
  };
  const std::string prefix = split == "train" ? "train" : "t10k";
  std::string images = find(prefix + "-images-idx3-ubyte"), labels = find(prefix + "-labels-idx1-ubyte");
  if (!images.empty()) {
    ImageSet s = read_idx(images, labels);
    if (fashion || dir.string().find("fashion") != std::string::npos)
      s.class_names = fashion_mnist_classes();
    else
      s.class_names = {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"};
    return s;
  }
  std::vector<std::string> batches;
  if (split == "train") {
    for (int i = 1; i <= 5; i++)
      if (fs::exists(dir / ("data_batch_" + std::to_string(i) + ".bin")))
        batches.push_back((dir / ("data_batch_" + std::to_string(i) + ".bin")).string());
  } else if (fs::exists(dir / "test_batch.bin")) {
    batches.push_back((dir / "test_batch.bin").string());
  }
  if (!batches.empty()) return read_cifar10(batches);
  try {
    return read_image_folder(dir.string(), 32);
  } catch (const Error& e) {
    fail("'" + dir.string() + "' holds no MNIST-style IDX files (" + prefix +
         "-images-idx3-ubyte[.gz]), no CIFAR-10 batches (data_batch_N.bin, test_batch.bin) and no usable images: " +
         e.what());
  }
}

ImageLoader::ImageLoader(const ImageSet& data, int64_t batch_size, uint64_t seed, bool hflip, int rank, int world,
                         int64_t accum)
    : data_(data), batch_(batch_size), seed_(seed), hflip_(hflip), cursor_(rank, world, accum) {
  AIGC_CHECK(batch_size >= 1 && batch_size <= data.n, "batch size " + std::to_string(batch_size) +
                                                          " must be between 1 and the " + std::to_string(data.n) +
                                                          " images of the dataset");
  order_.resize(size_t(data.n));
}

void ImageLoader::next(Tensor& images, std::vector<int32_t>& labels) {
  const int64_t g = cursor_.next(), per_epoch = batches_per_epoch(), epoch = g / per_epoch, k = g % per_epoch;
  // Each epoch's order is a permutation drawn from (seed, epoch), so position alone resumes exactly.
  if (order_epoch_ != epoch) {
    for (int64_t i = 0; i < data_.n; i++) order_[size_t(i)] = i;
    Rng rng(seed_ * 0x9e3779b97f4a7c15ULL + uint64_t(epoch));
    for (int64_t i = data_.n - 1; i > 0; i--) std::swap(order_[size_t(i)], order_[rng.next_u64() % uint64_t(i + 1)]);
    order_epoch_ = epoch;
  }
  const int64_t C = data_.channels, H = data_.height, W = data_.width, sz = data_.image_size();
  images = Tensor::empty({batch_, C, H, W});
  labels.assign(size_t(batch_), 0);
  Rng flip(seed_ ^ (0xa5a5a5a5ULL + uint64_t(g)));
  float* out = images.f32();
  for (int64_t b = 0; b < batch_; b++) {
    const int64_t idx = order_[size_t(k * batch_ + b)];
    const uint8_t* src = data_.pixels.data() + idx * sz;
    const bool mirror = hflip_ && (flip.next_u64() & 1);
    for (int64_t c = 0; c < C; c++)
      for (int64_t y = 0; y < H; y++)
        for (int64_t x = 0; x < W; x++) {
          const int64_t sx = mirror ? W - 1 - x : x;
          out[((b * C + c) * H + y) * W + x] = float(src[(c * H + y) * W + sx]) / 127.5f - 1.0f;
        }
    if (!data_.labels.empty()) labels[size_t(b)] = data_.labels[size_t(idx)];
  }
}

}  // namespace aigc

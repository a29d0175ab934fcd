// Image data: IDX (plain and gzip), CIFAR-10 batches, the Fashion-MNIST package, the minibatch loader, and every
// kind of damaged file giving a clear error.
#include <gtest/gtest.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>

#include "aigc/error.h"
#include "aigc/image_data.h"
#include "aigc/image_io.h"
#include "test_util.h"

using namespace aigc;
namespace fs = std::filesystem;

namespace {

std::string be32(uint32_t v) { return {char(v >> 24), char((v >> 16) & 0xff), char((v >> 8) & 0xff), char(v & 0xff)}; }

std::string idx_images(uint32_t n, uint32_t h, uint32_t w) {
  std::string s = be32(0x803) + be32(n) + be32(h) + be32(w);
  for (uint32_t i = 0; i < n * h * w; i++) s += char(i * 7 % 256);
  return s;
}

std::string idx_labels(uint32_t n) {
  std::string s = be32(0x801) + be32(n);
  for (uint32_t i = 0; i < n; i++) s += char(i % 10);
  return s;
}

std::string gzip(const std::string& data) {
  z_stream zs{};
  deflateInit2(&zs, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY);
  std::string out(deflateBound(&zs, uLong(data.size())) + 32, '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  zs.avail_in = uInt(data.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = uInt(out.size());
  deflate(&zs, Z_FINISH);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

void write(const fs::path& p, const std::string& s) { std::ofstream(p, std::ios::binary) << s; }

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST(ImageData, IdxPlainAndGzipReadTheSame) {
  fs::path d = aigc::testing::fresh_temp_dir("idx");
  write(d / "train-images-idx3-ubyte", idx_images(12, 4, 3));
  write(d / "train-labels-idx1-ubyte.gz", gzip(idx_labels(12)));
  write(d / "t10k-images-idx3-ubyte.gz", gzip(idx_images(12, 4, 3)));
  write(d / "t10k-labels-idx1-ubyte", idx_labels(12));
  ImageSet a = load_image_dataset(d.string(), "train"), b = load_image_dataset(d.string(), "test");
  EXPECT_EQ(a.n, 12);
  EXPECT_EQ(a.channels, 1);
  EXPECT_EQ(a.height, 4);
  EXPECT_EQ(a.width, 3);
  EXPECT_EQ(a.pixels, b.pixels);
  EXPECT_EQ(a.labels, b.labels);
  EXPECT_EQ(a.pixels[5], uint8_t(35));
  EXPECT_EQ(a.labels[11], 1);
}

TEST(ImageData, DamagedIdxFilesGiveClearErrors) {
  fs::path d = aigc::testing::fresh_temp_dir("idx_bad");
  auto err = [&](const std::string& images, const std::string& labels) {
    write(d / "i", images);
    write(d / "l", labels);
    return error_of([&] { read_idx((d / "i").string(), (d / "l").string()); });
  };
  std::string good = idx_images(5, 2, 2);
  EXPECT_NE(err(be32(0x802) + good.substr(4), idx_labels(5)).find("bad IDX magic"), std::string::npos);
  EXPECT_NE(err(good.substr(0, good.size() - 1), idx_labels(5)).find("declares 20 bytes"), std::string::npos);
  EXPECT_NE(err(good + "x", idx_labels(5)).find("declares 20 bytes"), std::string::npos);
  EXPECT_NE(err(good, idx_labels(4)).find("has 4 labels but"), std::string::npos);
  EXPECT_NE(err(good.substr(0, 7), idx_labels(5)).find("too short"), std::string::npos);
  EXPECT_NE(err(be32(0x803) + be32(0xffffffu) + be32(0xffffffu) + be32(0xffffffu), idx_labels(5)).find("absurd"),
            std::string::npos);
  std::string z = gzip(good);
  EXPECT_NE(err(z.substr(0, z.size() / 2), idx_labels(5)).find("truncated or corrupt"), std::string::npos);
  std::string flipped = z;
  flipped[flipped.size() / 2] ^= 0x55;
  EXPECT_NE(err(flipped, idx_labels(5)), "(no error)");
  EXPECT_NE(error_of([&] { read_idx((d / "missing").string()); }).find("missing"), std::string::npos);
}

TEST(ImageData, Cifar10Batches) {
  fs::path d = aigc::testing::fresh_temp_dir("cifar");
  std::string rec;
  for (int r = 0; r < 3; r++) {
    rec += char(r * 3);
    for (int i = 0; i < 3072; i++) rec += char((i + r) % 256);
  }
  write(d / "data_batch_1.bin", rec);
  write(d / "test_batch.bin", rec.substr(0, 3073));
  ImageSet s = load_image_dataset(d.string(), "train");
  EXPECT_EQ(s.n, 3);
  EXPECT_EQ(s.channels, 3);
  EXPECT_EQ(s.labels, (std::vector<int32_t>{0, 3, 6}));
  EXPECT_EQ(s.class_names[6], "frog");
  EXPECT_EQ(load_image_dataset(d.string(), "test").n, 1);
  write(d / "data_batch_1.bin", rec.substr(0, 3072 * 2));
  EXPECT_NE(error_of([&] { load_image_dataset(d.string(), "train"); }).find("whole number of CIFAR-10 records"),
            std::string::npos);
  write(d / "data_batch_1.bin", std::string(1, char(12)) + rec.substr(1, 3072));
  EXPECT_NE(error_of([&] { load_image_dataset(d.string(), "train"); }).find("has label 12"), std::string::npos);
  fs::path empty = aigc::testing::fresh_temp_dir("no_images");
  EXPECT_NE(error_of([&] { load_image_dataset(empty.string(), "train"); }).find("no usable images"), std::string::npos);
}

TEST(ImageData, LoaderScalesShufflesFlipsAndResumes) {
  ImageSet s;
  s.n = 10, s.channels = 1, s.height = 2, s.width = 3;
  for (int i = 0; i < 10; i++) {
    for (int p = 0; p < 6; p++) s.pixels.push_back(uint8_t(i * 25 + p * (p == 0 ? 0 : 1)));
    s.labels.push_back(i);
  }
  s.pixels[0] = 0, s.pixels[6 * 9 + 5] = 255;
  ImageLoader a(s, 4, 7), b(s, 4, 7);
  Tensor x, y;
  std::vector<int32_t> la, lb, seen;
  for (int k = 0; k < 2; k++) {  // one epoch: 2 batches of 4 (the 2 left over wait for the next epoch)
    a.next(x, la);
    seen.insert(seen.end(), la.begin(), la.end());
    for (int64_t i = 0; i < x.numel(); i++) ASSERT_TRUE(x.f32()[i] >= -1.0f && x.f32()[i] <= 1.0f);
  }
  std::sort(seen.begin(), seen.end());
  EXPECT_EQ(std::unique(seen.begin(), seen.end()), seen.end()) << "an image repeated within an epoch";
  b.set_position(2);  // resume where a stands
  a.next(x, la);
  b.next(y, lb);
  EXPECT_EQ(la, lb);
  EXPECT_EQ(x.to_vector(), y.to_vector());
  // Horizontal flips mirror rows and keep the pixel values.
  ImageLoader f(s, 10, 3, true), g(s, 10, 3, false);
  f.next(x, la);
  g.next(y, lb);
  EXPECT_EQ(la, lb);
  int mirrored = 0;
  for (int64_t b2 = 0; b2 < 10; b2++) {
    const float* p = x.f32() + b2 * 6;
    const float* q = y.f32() + b2 * 6;
    bool same = std::equal(p, p + 6, q);
    bool mirror = p[0] == q[2] && p[1] == q[1] && p[2] == q[0] && p[3] == q[5] && p[5] == q[3];
    EXPECT_TRUE(same || mirror);
    mirrored += !same;
  }
  EXPECT_GT(mirrored, 0);
  EXPECT_THROW(ImageLoader(s, 11, 0), Error);
  // An unlabeled set is one class, 0.
  s.labels.clear();
  ImageLoader u(s, 10, 3);
  u.next(x, la);
  EXPECT_EQ(la, std::vector<int32_t>(10, 0));
}

TEST(ImageData, FashionMnistPackage) {
  AIGC_NEEDS("fashion-mnist", aigc::testing::fashion_mnist_missing());
  ImageSet train = load_image_dataset("fashion-mnist", "train"), test = load_image_dataset("fashion-mnist", "test");
  EXPECT_EQ(train.n, 60000);
  EXPECT_EQ(test.n, 10000);
  EXPECT_EQ(train.height, 28);
  EXPECT_EQ(train.class_names[7], "sneaker");
  std::vector<int> counts(10);
  for (int32_t l : test.labels) counts[size_t(l)]++;
  for (int c : counts) EXPECT_EQ(c, 1000);
}

TEST(ImageData, FolderOfPngsWithClassSubfolders) {
  fs::path d = aigc::testing::fresh_temp_dir("png_folder");
  fs::create_directories(d / "cats"), fs::create_directories(d / "dogs");
  // One 40x30 grayscale image per file (a single-image grid has a 2-pixel black border: 44x34 in all).
  for (int k = 0; k < 3; k++) {
    Tensor img = Tensor::empty({1, 1, 30, 40});
    for (int64_t i = 0; i < img.numel(); i++) img.f32()[i] = k == 0 ? 1.0f : -1.0f + 0.5f * float(k);
    save_image_grid((d / (k < 2 ? "cats" : "dogs") / ("img" + std::to_string(k) + ".png")).string(), img, 1);
  }
  ImageSet s = load_image_dataset(d.string(), "train");
  EXPECT_EQ(s.n, 3);
  EXPECT_EQ(s.channels, 1);
  EXPECT_EQ(s.height, 32);
  EXPECT_EQ(s.class_names, (std::vector<std::string>{"cats", "dogs"}));
  EXPECT_EQ(s.labels, (std::vector<int32_t>{0, 0, 1}));
  EXPECT_EQ(s.pixels[size_t(16 * 32 + 16)], 255);        // image 0, centre: white
  EXPECT_EQ(s.pixels[size_t(1024 + 16 * 32 + 16)], 64);  // image 1, centre: -0.5 -> (0.5 * 127.5) rounds to 64
  write(d / "dogs" / "broken.png", "\x89PNG\r\n\x1a\n not really");
  EXPECT_NE(error_of([&] { load_image_dataset(d.string(), "train"); }).find("broken.png"), std::string::npos);
}

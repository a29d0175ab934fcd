// A folder of PNG/JPEG images as a dataset: files directly in the folder (unlabeled) or in one subfolder per
// class (the subfolder names become the class names). Each image is center-cropped to a square and resized
// (area averaging) to size x size; grayscale files give 1 channel unless any file has colour.
#include <algorithm>
#include <array>
#include <cctype>
#include <filesystem>

#include "aigc/error.h"
#include "aigc/file_util.h"
#include "aigc/image_data.h"

#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_STATIC
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#include <stb/stb_image.h>

namespace aigc {

namespace fs = std::filesystem;

namespace {

bool is_image(const fs::path& p) {
  std::string e = p.extension().string();
  std::transform(e.begin(), e.end(), e.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  return e == ".png" || e == ".jpg" || e == ".jpeg";
}

// Center square crop of an (h, w, c) image, area-resized to (size, size, c).
std::vector<uint8_t> crop_resize(const uint8_t* px, int w, int h, int c, int64_t size) {
  const int side = std::min(w, h), x0 = (w - side) / 2, y0 = (h - side) / 2;
  std::vector<uint8_t> out(size_t(size * size * c));
  for (int64_t oy = 0; oy < size; oy++)
    for (int64_t ox = 0; ox < size; ox++) {
      // Source box of this output pixel (at least one source pixel).
      const int sy0 = y0 + int(oy * side / size), sy1 = std::max(sy0 + 1, y0 + int((oy + 1) * side / size));
      const int sx0 = x0 + int(ox * side / size), sx1 = std::max(sx0 + 1, x0 + int((ox + 1) * side / size));
      for (int ch = 0; ch < c; ch++) {
        double s = 0;
        for (int y = sy0; y < sy1; y++)
          for (int x = sx0; x < sx1; x++) s += px[(size_t(y) * size_t(w) + size_t(x)) * size_t(c) + size_t(ch)];
        out[size_t((oy * size + ox) * c + ch)] = uint8_t(s / double((sy1 - sy0) * (sx1 - sx0)) + 0.5);
      }
    }
  return out;
}

}  // namespace

ImageSet read_image_folder(const std::string& dir, int64_t size) {
  AIGC_CHECK(size >= 4 && size <= 1024, "image size must be between 4 and 1024");
  std::vector<std::pair<std::string, int32_t>> files;
  ImageSet s;
  std::vector<fs::path> entries{fs::directory_iterator(dir), fs::directory_iterator()};
  std::sort(entries.begin(), entries.end());
  for (const fs::path& e : entries) {
    if (fs::is_directory(e)) {
      std::vector<fs::path> sub{fs::directory_iterator(e), fs::directory_iterator()};
      std::sort(sub.begin(), sub.end());
      bool any = false;
      for (const fs::path& f : sub)
        if (is_image(f)) files.push_back({f.string(), int32_t(s.class_names.size())}), any = true;
      if (any) s.class_names.push_back(e.filename().string());
    } else if (is_image(e)) {
      files.push_back({e.string(), -1});
    }
  }
  AIGC_CHECK(!files.empty(), "'" + dir + "' holds no .png/.jpg/.jpeg images (directly or in class subfolders)");
  // Decode each file once to learn whether any has colour, then convert all to that channel count.
  std::vector<std::vector<uint8_t>> decoded;
  std::vector<std::array<int, 3>> dims;
  bool colour = false;
  for (const auto& [path, label] : files) {
    std::string bytes = read_file(path);
    AIGC_CHECK(bytes.size() < (size_t(1) << 31), "'" + path + "' is too large");
    int w = 0, h = 0, c = 0;
    AIGC_CHECK(stbi_info_from_memory(reinterpret_cast<const stbi_uc*>(bytes.data()), int(bytes.size()), &w, &h, &c),
               "'" + path + "' is not a readable PNG or JPEG image (" + stbi_failure_reason() + ")");
    AIGC_CHECK(w > 0 && h > 0 && int64_t(w) * h <= (int64_t(1) << 26),
               "'" + path + "': image size " + std::to_string(w) + "x" + std::to_string(h) + " is out of range");
    uint8_t* px =
        stbi_load_from_memory(reinterpret_cast<const stbi_uc*>(bytes.data()), int(bytes.size()), &w, &h, &c, 3);
    AIGC_CHECK(px, "'" + path + "' could not be decoded (" + std::string(stbi_failure_reason()) + ")");
    colour = colour || c >= 3;
    decoded.push_back(crop_resize(px, w, h, 3, size));
    stbi_image_free(px);
    s.labels.push_back(label);
  }
  s.n = int64_t(files.size()), s.channels = colour ? 3 : 1, s.height = size, s.width = size;
  for (const std::vector<uint8_t>& img : decoded)  // HWC (3) -> CHW (1 or 3)
    for (int64_t c = 0; c < s.channels; c++)
      for (int64_t i = 0; i < size * size; i++) s.pixels.push_back(img[size_t(i * 3 + c)]);
  if (s.class_names.empty()) s.labels.clear();
  return s;
}

}  // namespace aigc

// The Rows16 layout of quantized matrices (aigc/quant.h): a pure reordering of the blocks' bytes, in both
// directions, so that packing is checked by unpacking.
#include <cstring>

#include "aigc/error.h"
#include "aigc/quant.h"

namespace aigc {

namespace {

template <typename Block>
constexpr int64_t kQuads = sizeof(Block::qs) / 4;  // 4-byte quads per block: Q8_0 8, Q4_0 and Q4_1 4
template <typename Block>
constexpr int64_t kHalves = (sizeof(Block) - sizeof(Block::qs)) / 2;  // d (and Q4_1's m)

// The pieces of row r's block in the tile at t0, its plain place at p: move(plain_at, tile_at, bytes). The tile's
// k-th half of row r is at 32 k + 2 r, its quads from 2 kHalves 16 + 4 r, 64 bytes apart.
template <typename Block, typename Move>
void block_pieces(int64_t t0, int64_t r, int64_t p, Move&& move) {
  for (int64_t k = 0; k < kHalves<Block>; k++) move(p + 2 * k, t0 + 2 * kRowGroup * k + 2 * r, 2);
  const int64_t q0 = t0 + 2 * kRowGroup * kHalves<Block> + 4 * r;
  for (int64_t j = 0; j < kQuads<Block>; j++) move(p + 2 * kHalves<Block> + 4 * j, q0 + 64 * j, 4);
}

// Moves every block of the whole groups between its plain place and its tile.
template <typename Block>
void convert(const void* src, void* dst, int64_t rows, int64_t cols, bool to_rows16) {
  const int64_t nb = cols / kQuantBlock;
  const int64_t tile = kRowGroup * int64_t(sizeof(Block));
  auto* in = static_cast<const uint8_t*>(src);
  auto* out = static_cast<uint8_t*>(dst);
  auto move = [&](int64_t plain_at, int64_t tile_at, size_t n) {
    std::memcpy(out + (to_rows16 ? tile_at : plain_at), in + (to_rows16 ? plain_at : tile_at), n);
  };
  for (int64_t g = 0; g < rows / kRowGroup; g++)
    for (int64_t b = 0; b < nb; b++)
      for (int64_t r = 0; r < kRowGroup; r++)
        block_pieces<Block>((g * nb + b) * tile, r, ((g * kRowGroup + r) * nb + b) * int64_t(sizeof(Block)), move);
  // The rows past the last whole group stay in the plain layout, at the same place in both.
  const int64_t done = rows / kRowGroup * kRowGroup * nb * int64_t(sizeof(Block));
  std::memcpy(out + done, in + done, size_t((rows % kRowGroup) * nb * int64_t(sizeof(Block))));
}

// Row `row` alone, into its plain blocks at dst.
template <typename Block>
void one_row(const void* src, void* dst, int64_t rows, int64_t cols, int64_t row) {
  const int64_t nb = cols / kQuantBlock, bytes = int64_t(sizeof(Block));
  auto* in = static_cast<const uint8_t*>(src);
  auto* out = static_cast<uint8_t*>(dst);
  if (row >= rows / kRowGroup * kRowGroup) {  // past the whole groups: plain
    std::memcpy(out, in + row * nb * bytes, size_t(nb * bytes));
    return;
  }
  const int64_t g = row / kRowGroup, r = row % kRowGroup;
  for (int64_t b = 0; b < nb; b++)
    block_pieces<Block>(
        (g * nb + b) * kRowGroup * bytes, r, b * bytes,
        [&](int64_t plain_at, int64_t tile_at, size_t n) { std::memcpy(out + plain_at, in + tile_at, n); });
}

// Checks the matrix, then f(Block{}) with the block type of `type`.
template <typename F>
void with_block(DType type, int64_t rows, int64_t cols, F&& f) {
  AIGC_CHECK(is_quantized(type), std::string("Rows16: ") + dtype_name(type) + " is not a quantized type");
  AIGC_CHECK(rows >= 0 && cols >= 0 && cols % kQuantBlock == 0, "Rows16: columns must be whole 32-blocks");
  if (type == DType::Q8_0)
    f(BlockQ8_0{});
  else if (type == DType::Q4_0)
    f(BlockQ4_0{});
  else
    f(BlockQ4_1{});
}

}  // namespace

void interleave_rows16(DType type, const void* plain, void* rows16, int64_t rows, int64_t cols) {
  with_block(type, rows, cols, [&](auto b) { convert<decltype(b)>(plain, rows16, rows, cols, true); });
}

void deinterleave_rows16(DType type, const void* rows16, void* plain, int64_t rows, int64_t cols) {
  with_block(type, rows, cols, [&](auto b) { convert<decltype(b)>(rows16, plain, rows, cols, false); });
}

void rows16_row(DType type, const void* rows16, void* plain_row, int64_t rows, int64_t cols, int64_t row) {
  AIGC_CHECK(row >= 0 && row < rows, "Rows16: row " + std::to_string(row) + " of " + std::to_string(rows));
  with_block(type, rows, cols, [&](auto b) { one_row<decltype(b)>(rows16, plain_row, rows, cols, row); });
}

}  // namespace aigc

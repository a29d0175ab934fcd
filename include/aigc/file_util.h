// Whole-file reads and crash-safe writes.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>
#include <utility>

namespace aigc {

// The whole file as bytes. aigc::Error naming the path (and strerror) if it cannot be opened or read.
std::string read_file(const std::string& path);

// A file's bytes, read-only: a regular file mapped (its pages are the page cache's, read when first touched and
// the kernel's to drop again, so a model file of gigabytes is not copied into the process), anything else (a
// pipe, an empty file) read into memory. Errors as read_file's. A mapped file that another process truncates while
// it is mapped faults on the lost pages (SIGBUS), as for any reader that maps model files.
class FileBytes {
 public:
  explicit FileBytes(std::string bytes = {}) : owned_(std::move(bytes)) {}
  static FileBytes map(const std::string& path);
  FileBytes(FileBytes&& o) noexcept
      : owned_(std::move(o.owned_)), map_(std::exchange(o.map_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  FileBytes& operator=(FileBytes&& o) noexcept;
  FileBytes(const FileBytes&) = delete;
  FileBytes& operator=(const FileBytes&) = delete;
  ~FileBytes();
  std::string_view view() const { return map_ ? std::string_view(map_, size_) : std::string_view(owned_); }
  // Bytes [offset, offset + n) will not be read again soon: a mapped file's whole pages among them leave this
  // process's memory (the page cache keeps them; a later read maps them again). Held bytes stay.
  void drop(size_t offset, size_t n) const;

 private:
  std::string owned_;
  const char* map_ = nullptr;  // a mapping of size_ bytes, or none
  size_t size_ = 0;
};

// Writes to a temporary file in the same directory, fsyncs it, renames it over `path` and fsyncs the
// directory: readers see the old file or the new one, never a torn one, even if the process dies mid-write.
// On failure the temporary file is removed, `path` is untouched, and an aigc::Error names path + strerror.
void write_file_atomic(const std::string& path, std::string_view data);

// The streaming form, for files too large to build in memory. Destroying it without commit() removes the
// temporary file and leaves `path` untouched. If `path` is a symlink, the link itself is replaced.
// A crash (kill -9, power loss) can leave a stray "<path>.tmp.*" file behind, never a damaged `path`.
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(const std::string& path);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  void write(const void* data, size_t n);
  void commit();  // fsync + rename + fsync(dir); after it, write() and commit() are errors
  const std::string& path() const { return path_; }
  size_t bytes_written() const { return written_; }

 private:
  [[noreturn]] void abandon(const std::string& what, int err);  // removes the temp file, then throws

  std::string path_, tmp_;
  int fd_ = -1;
  size_t written_ = 0;
  bool committed_ = false;
};

}  // namespace aigc

// Whole-file reads and crash-safe writes.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>

namespace aigc {

std::string read_file(const std::string& path);  // aigc::Error naming the path on failure

// Writes to a temporary file in the same directory, fsyncs it, renames it over `path` and fsyncs the
// directory: readers see the old file or the new one, never a torn one, even if the process dies mid-write.
void write_file_atomic(const std::string& path, std::string_view data);

// The streaming form, for files too large to build in memory. Destroying it without commit() removes the
// temporary file and leaves `path` untouched.
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(const std::string& path);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;
  void write(const void* data, size_t n);
  void commit();

 private:
  std::string path_, tmp_;
  int fd_ = -1;
};

}  // namespace aigc

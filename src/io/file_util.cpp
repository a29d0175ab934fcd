#include "aigc/file_util.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "aigc/error.h"

namespace aigc {

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  AIGC_CHECK(f.good(), "cannot open '" + path + "': " + std::strerror(errno));
  std::ostringstream ss;
  ss << f.rdbuf();
  AIGC_CHECK(!f.bad(), "error reading '" + path + "'");
  return ss.str();
}

AtomicFileWriter::AtomicFileWriter(const std::string& path) : path_(path) {
  tmp_ = path + ".tmp." + std::to_string(getpid());
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  AIGC_CHECK(fd_ >= 0, "cannot create '" + tmp_ + "': " + std::strerror(errno));
}

AtomicFileWriter::~AtomicFileWriter() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(tmp_.c_str());
  }
}

void AtomicFileWriter::write(const void* data, size_t n) {
  AIGC_CHECK(fd_ >= 0, "write to '" + path_ + "' after commit");
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd_, p, n);
    if (w < 0 && errno == EINTR) continue;
    AIGC_CHECK(w > 0, "writing '" + tmp_ + "' failed: " + std::strerror(errno) + " (is the disk full?)");
    p += w;
    n -= size_t(w);
  }
}

void AtomicFileWriter::commit() {
  AIGC_CHECK(fd_ >= 0, "'" + path_ + "' committed twice");
  AIGC_CHECK(::fsync(fd_) == 0, "fsync of '" + tmp_ + "' failed: " + std::strerror(errno));
  ::close(fd_);
  fd_ = -1;
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
    std::string err = std::strerror(errno);
    ::unlink(tmp_.c_str());
    fail("cannot rename '" + tmp_ + "' to '" + path_ + "': " + err);
  }
  // Make the rename itself durable.
  std::string dir = std::filesystem::path(path_).parent_path().string();
  int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

void write_file_atomic(const std::string& path, std::string_view data) {
  AtomicFileWriter w(path);
  w.write(data.data(), data.size());
  w.commit();
}

}  // namespace aigc

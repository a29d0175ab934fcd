#include "aigc/file_util.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <utility>

#include "aigc/error.h"

namespace aigc {

namespace {

std::string errno_text(int err) { return std::strerror(err); }

// Closes fd on scope exit; read_file's error paths would otherwise leak it.
struct FdGuard {
  int fd;
  explicit FdGuard(int f) : fd(f) {}
  FdGuard(FdGuard&& o) noexcept : fd(std::exchange(o.fd, -1)) {}
  FdGuard(const FdGuard&) = delete;
  FdGuard& operator=(const FdGuard&) = delete;
  ~FdGuard() {
    if (fd >= 0) ::close(fd);
  }
};

// Directory fsync makes the rename durable. Filesystems that cannot fsync a directory say EINVAL/ENOTSUP;
// a directory we may write but not read cannot be opened at all. Both are tolerated: the rename has
// already happened and there is nothing more we could do.
int sync_parent_dir(const std::string& path) {
  std::string dir = std::filesystem::path(path).parent_path().string();
  int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return 0;
  int rc = ::fsync(dfd);
  int err = errno;
  ::close(dfd);
  if (rc == 0 || err == EINVAL || err == ENOTSUP) return 0;
  return err;
}

// Opens path for reading and stats it; errors name the path. The guard closes it.
FdGuard open_for_reading(const std::string& path, struct stat& st) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    fail("cannot open '" + path + "': " + errno_text(err));
  }
  FdGuard guard(fd);
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    fail("cannot stat '" + path + "': " + errno_text(err));
  }
  return guard;
}

// The rest of an open file's bytes (st: its stat).
std::string read_open(int fd, const struct stat& st, const std::string& path) {
  if (S_ISDIR(st.st_mode)) fail("cannot read '" + path + "': " + errno_text(EISDIR));
  // Size the buffer once for regular files, then read on in chunks in case the file grew (or is a pipe).
  std::string out(S_ISREG(st.st_mode) && st.st_size > 0 ? size_t(st.st_size) : 0, '\0');
  auto read_some = [&](char* dst, size_t cap) {
    for (;;) {
      ssize_t r = ::read(fd, dst, cap);
      int err = errno;
      if (r >= 0) return size_t(r);
      if (err != EINTR) fail("error reading '" + path + "': " + errno_text(err));
    }
  };
  size_t got = 0;
  while (got < out.size()) {
    size_t r = read_some(out.data() + got, out.size() - got);
    if (r == 0) break;  // shrank while we read
    got += r;
  }
  if (got < out.size()) {
    out.resize(got);
    return out;
  }
  char buf[65536];
  while (size_t r = read_some(buf, sizeof buf)) out.append(buf, r);
  return out;
}

}  // namespace

FileBytes FileBytes::map(const std::string& path) {
  struct stat st {};
  const FdGuard guard = open_for_reading(path, st);
  if (!S_ISREG(st.st_mode) || st.st_size <= 0) return FileBytes(read_open(guard.fd, st, path));
  void* p = ::mmap(nullptr, size_t(st.st_size), PROT_READ, MAP_PRIVATE, guard.fd, 0);
  if (p == MAP_FAILED) return FileBytes(read_open(guard.fd, st, path));  // a filesystem that cannot map: read it
  FileBytes f;
  f.map_ = static_cast<const char*>(p), f.size_ = size_t(st.st_size);
  return f;  // the mapping outlives the descriptor
}

FileBytes& FileBytes::operator=(FileBytes&& o) noexcept {
  if (this != &o) {
    if (map_) ::munmap(const_cast<char*>(map_), size_);
    owned_ = std::move(o.owned_);
    map_ = std::exchange(o.map_, nullptr);
    size_ = std::exchange(o.size_, 0);
  }
  return *this;
}

void FileBytes::drop(size_t offset, size_t n) const {
  if (!map_ || offset >= size_) return;
  n = std::min(n, size_ - offset);
  const uintptr_t page = uintptr_t(::sysconf(_SC_PAGESIZE)), at = reinterpret_cast<uintptr_t>(map_) + offset;
  const uintptr_t lo = (at + page - 1) & ~(page - 1), hi = (at + n) & ~(page - 1);
  if (hi > lo) ::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
}

FileBytes::~FileBytes() {
  if (map_) ::munmap(const_cast<char*>(map_), size_);
  map_ = nullptr;
}

std::string read_file(const std::string& path) {
  struct stat st {};
  const FdGuard guard = open_for_reading(path, st);
  return read_open(guard.fd, st, path);
}

AtomicFileWriter::AtomicFileWriter(const std::string& path) : path_(path) {
  AIGC_CHECK(!path.empty(), "AtomicFileWriter: empty path");
  // A fresh name with O_EXCL, so two writers (threads or processes) never share a temp file. Mode 0666 lets
  // the umask decide permissions, as for any newly created file.
  static std::atomic<uint64_t> counter{0};
  uint64_t nonce = uint64_t(std::chrono::steady_clock::now().time_since_epoch().count());
  for (int attempt = 0; attempt < 100; attempt++) {
    uint64_t id = nonce ^ (counter.fetch_add(1) * 0x9E3779B97F4A7C15ull);
    tmp_ = path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(id % 1000000007u);
    fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd_ >= 0 || errno != EEXIST) break;
  }
  if (fd_ < 0) {
    int err = errno;
    tmp_.clear();  // nothing of ours to remove
    fail("cannot write '" + path_ + "': creating a temporary file in its directory failed: " + errno_text(err));
  }
}

AtomicFileWriter::~AtomicFileWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_ && !tmp_.empty()) ::unlink(tmp_.c_str());
}

void AtomicFileWriter::abandon(const std::string& what, int err) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  if (!tmp_.empty()) ::unlink(tmp_.c_str());
  tmp_.clear();
  fail("cannot write '" + path_ + "': " + what + ": " + errno_text(err) + "; the previous file (if any) is intact");
}

void AtomicFileWriter::write(const void* data, size_t n) {
  AIGC_CHECK(!committed_, "AtomicFileWriter: write to '" + path_ + "' after commit()");
  AIGC_CHECK(fd_ >= 0, "AtomicFileWriter: write to '" + path_ + "' after an earlier failure");
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd_, p, n);
    int err = w < 0 ? errno : ENOSPC;  // a zero-byte write would loop forever; treat it as a full disk
    if (w < 0 && err == EINTR) continue;
    if (w <= 0) abandon("write failed", err);
    p += w;
    n -= size_t(w);
    written_ += size_t(w);
  }
}

void AtomicFileWriter::commit() {
  AIGC_CHECK(!committed_, "AtomicFileWriter: '" + path_ + "' committed twice");
  AIGC_CHECK(fd_ >= 0, "AtomicFileWriter: commit of '" + path_ + "' after an earlier failure");
  if (::fsync(fd_) != 0) {
    int err = errno;
    abandon("fsync failed", err);
  }
  // close() can report deferred write errors (NFS, quota): a failure here means the data may be incomplete.
  int rc = ::close(fd_), err = errno;
  fd_ = -1;
  if (rc != 0 && err != EINTR) abandon("close failed", err);
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
    err = errno;
    abandon("rename over the target failed", err);
  }
  committed_ = true;
  tmp_.clear();
  if (int derr = sync_parent_dir(path_))
    fail("'" + path_ + "' was replaced, but syncing its directory failed: " + errno_text(derr));
}

void write_file_atomic(const std::string& path, std::string_view data) {
  AtomicFileWriter w(path);
  w.write(data.data(), data.size());
  w.commit();
}

}  // namespace aigc

#include "http_core.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

namespace aigc::serve {

namespace {

// The connection the current thread is answering (-1: none, or bytes in memory).
thread_local int t_socket = -1;
thread_local bool t_close_after = false;

// Stands in for the listening socket of a server that only answers bytes in memory (never a real descriptor).
constexpr int kMemoryOnly = -2;

// poll() for `events` for at most ms milliseconds (EINTR retried); > 0 when ready.
int wait_for(int fd, short events, int ms) {
  pollfd p{fd, events, 0};
  int r;
  do {
    r = ::poll(&p, 1, ms);
  } while (r < 0 && errno == EINTR);
  return r;
}

int timeout_ms(time_t sec, time_t usec) { return int(sec * 1000 + usec / 1000); }

// Open unless the peer has closed it: nothing to read yet, or at least one byte waiting.
bool peer_open(int fd) {
  if (wait_for(fd, POLLIN, 0) == 0) return true;
  char b;
  const ssize_t n = ::recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
  return n > 0 || (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR));
}

void address_of(const sockaddr_storage& a, std::string& ip, int& port) {
  char buf[INET6_ADDRSTRLEN] = {0};
  if (a.ss_family == AF_INET) {
    const auto& v4 = reinterpret_cast<const sockaddr_in&>(a);
    inet_ntop(AF_INET, &v4.sin_addr, buf, sizeof buf);
    port = ntohs(v4.sin_port);
  } else if (a.ss_family == AF_INET6) {
    const auto& v6 = reinterpret_cast<const sockaddr_in6&>(a);
    inet_ntop(AF_INET6, &v6.sin6_addr, buf, sizeof buf);
    port = ntohs(v6.sin6_port);
  }
  ip = buf;
}

// A connection's socket, read through a small buffer (httplib's line reader asks for one byte at a time).
class SocketStream final : public httplib::Stream {
 public:
  SocketStream(int fd, int read_ms, int write_ms) : fd_(fd), read_ms_(read_ms), write_ms_(write_ms) {}
  bool is_readable() const override { return wait_for(fd_, POLLIN, read_ms_) > 0; }
  // Not peer_open: a client that half-closes after sending its request still reads the answer. A client that
  // is really gone makes the write fail (EPIPE), which ends a stream at its next write.
  bool is_writable() const override { return wait_for(fd_, POLLOUT, write_ms_) > 0; }
  ssize_t read(char* ptr, size_t size) override {
    if (off_ == len_) {
      if (!is_readable()) return -1;
      ssize_t n;
      do {
        n = ::recv(fd_, buf_, sizeof buf_, 0);
      } while (n < 0 && errno == EINTR);
      if (n <= 0) return n;
      off_ = 0, len_ = size_t(n);
    }
    const size_t k = std::min(size, len_ - off_);
    std::memcpy(ptr, buf_ + off_, k);
    off_ += k;
    return ssize_t(k);
  }
  ssize_t write(const char* ptr, size_t size) override {
    if (!is_writable()) return -1;
    ssize_t n;
    do {
      n = ::send(fd_, ptr, size, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    return n;
  }
  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    sockaddr_storage a{};
    socklen_t n = sizeof a;
    if (::getpeername(fd_, reinterpret_cast<sockaddr*>(&a), &n) == 0) address_of(a, ip, port);
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    sockaddr_storage a{};
    socklen_t n = sizeof a;
    if (::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &n) == 0) address_of(a, ip, port);
  }
  // httplib asks for the descriptor only to refuse those past select()'s FD_SETSIZE (with a 500); this loop
  // uses poll(), which has no such limit, so it reports none.
  socket_t socket() const override { return 0; }
  bool buffered() const { return off_ < len_; }  // a pipelined request already read

 private:
  int fd_, read_ms_, write_ms_;
  char buf_[4096];
  size_t off_ = 0, len_ = 0;
};

// Bytes in memory: reads the request, collects the answer.
class MemoryStream final : public httplib::Stream {
 public:
  MemoryStream(const std::string& in, std::string& out) : in_(in), out_(out) {}
  bool is_readable() const override { return true; }
  bool is_writable() const override { return true; }
  ssize_t read(char* ptr, size_t size) override {
    const size_t k = std::min(size, in_.size() - pos_);
    std::memcpy(ptr, in_.data() + pos_, k);
    pos_ += k;
    return ssize_t(k);
  }
  ssize_t write(const char* ptr, size_t size) override {
    out_.append(ptr, size);
    return ssize_t(size);
  }
  void get_remote_ip_and_port(std::string& ip, int& port) const override { ip = "memory", port = 0; }
  void get_local_ip_and_port(std::string& ip, int& port) const override { ip = "memory", port = 0; }
  socket_t socket() const override { return 0; }
  bool consumed() const { return pos_ == in_.size(); }

 private:
  const std::string& in_;
  std::string& out_;
  size_t pos_ = 0;
};

}  // namespace

bool HttpCore::client_gone() { return t_socket >= 0 && !peer_open(t_socket); }

void HttpCore::close_after_answer() { t_close_after = true; }

bool HttpCore::closing() { return t_close_after; }

std::string HttpCore::answer_bytes(const std::string& request, int max_requests) {
  std::string out;
  MemoryStream strm(request, out);
  t_socket = -1;
  // httplib writes streamed answers only while its listening socket is valid (else it is shutting down); a server
  // that never listened answers from memory all the same.
  if (!is_running() && svr_sock_ == INVALID_SOCKET) svr_sock_ = kMemoryOnly;
  for (int i = 0; i < max_requests && !strm.consumed(); i++) {
    t_close_after = false;
    bool closed = false;
    if (!process_request(strm, i + 1 == max_requests, closed, nullptr) || closed || t_close_after) break;
  }
  return out;
}

// As httplib's own loop: up to keep_alive_max_count requests per connection, each waited for at most the
// keep-alive timeout, watching for the server's stop every 10 ms.
bool HttpCore::process_and_close_socket(socket_t sock) {
  t_socket = sock;
  const int read_ms = timeout_ms(read_timeout_sec_, read_timeout_usec_);
  const int write_ms = timeout_ms(write_timeout_sec_, write_timeout_usec_);
  SocketStream strm(sock, read_ms, write_ms);  // one per connection: its buffer may hold the next request
  bool ok = false;
  for (size_t left = keep_alive_max_count_; left > 0 && svr_sock_ != INVALID_SOCKET; left--) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(keep_alive_timeout_sec_);
    int ready = strm.buffered() ? 1 : 0;
    while (!ready && svr_sock_ != INVALID_SOCKET && (ready = wait_for(sock, POLLIN, 10)) == 0 &&
           std::chrono::steady_clock::now() < until) {}
    if (ready <= 0) break;
    t_close_after = false;
    bool closed = false;
    ok = process_request(strm, left == 1, closed, nullptr);
    if (!ok || closed || t_close_after) break;
  }
  if (t_close_after) {
    // Closed with the client still sending (a body refused unread): stop writing, then read what it sends for
    // a moment, so that the kernel does not answer its bytes with a reset that could destroy our answer.
    ::shutdown(sock, SHUT_WR);
    char sink[4096];
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(500);
    for (size_t drained = 0; drained < (1u << 20) && std::chrono::steady_clock::now() < until;) {
      if (wait_for(sock, POLLIN, 50) <= 0) continue;
      const ssize_t n = ::recv(sock, sink, sizeof sink, 0);
      if (n <= 0) break;
      drained += size_t(n);
    }
  }
  ::shutdown(sock, SHUT_RDWR);
  ::close(sock);
  t_socket = -1;
  t_close_after = false;
  return ok;
}

}  // namespace aigc::serve

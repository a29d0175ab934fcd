// Ctrl-C during training: while a guard lives, SIGINT only raises a flag, so the loop can finish its step and
// save a checkpoint; the previous handler returns when the guard goes out of scope (exceptions included).
#pragma once

namespace aigc {

class SigintGuard {
 public:
  SigintGuard();
  ~SigintGuard();
  SigintGuard(const SigintGuard&) = delete;
  SigintGuard& operator=(const SigintGuard&) = delete;
  bool requested() const;  // Ctrl-C arrived since the guard was made

 private:
  void (*prev_)(int);
};

}  // namespace aigc

#include "aigc/interrupt.h"

#include <csignal>

namespace aigc {

namespace {
volatile std::sig_atomic_t g_interrupted = 0;
extern "C" void on_sigint(int) { g_interrupted = 1; }
}  // namespace

SigintGuard::SigintGuard() {
  g_interrupted = 0;
  prev_ = std::signal(SIGINT, on_sigint);
}

SigintGuard::~SigintGuard() { std::signal(SIGINT, prev_); }

bool SigintGuard::requested() const { return g_interrupted != 0; }

}  // namespace aigc

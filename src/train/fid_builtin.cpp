// The pinned FID-FMNIST feature network, compiled into the binary so that every build scores images with the
// same weights. A classifier retrained from scratch is not the same network: training over thousands of steps
// amplifies last-bit differences between CPUs and kernel versions, and FID values move with the features
// (the Inception FID is fixed by its published weights for the same reason).
#include <string_view>

#include "aigc/fid.h"

// The assembler copies the file's bytes into read-only data; no multi-megabyte array literal to compile.
asm(".section .rodata\n"
    ".balign 16\n"
    ".global aigc_fid_classifier_begin\n"
    "aigc_fid_classifier_begin:\n"
    ".incbin \"" AIGC_FID_CLASSIFIER_FILE
    "\"\n"
    ".global aigc_fid_classifier_end\n"
    "aigc_fid_classifier_end:\n"
    ".previous\n");
extern "C" const char aigc_fid_classifier_begin[], aigc_fid_classifier_end[];

namespace aigc {
std::string_view builtin_classifier_bytes() {
  return {aigc_fid_classifier_begin, size_t(aigc_fid_classifier_end - aigc_fid_classifier_begin)};
}
}  // namespace aigc

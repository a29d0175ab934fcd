#include "aigc/error.h"

namespace aigc {
void fail(const std::string& msg) { throw Error(msg); }
}  // namespace aigc

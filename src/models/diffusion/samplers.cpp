// The ODE/SDE samplers of samplers.h, composed from ops on whole tensors (one coefficient per step).
#include "aigc/samplers.h"

#include <algorithm>
#include <cmath>

#include "aigc/autograd.h"
#include "aigc/diffusion.h"
#include "aigc/error.h"
#include "aigc/ops.h"
#include "aigc/rng.h"

namespace aigc {

namespace {

// a x + b y, x and y of one shape.
Tensor lin(double a, const Tensor& x, double b, const Tensor& y) {
  const int64_t n = x.size(0);
  return ops::combine_rows(std::vector<float>(size_t(n), float(a)), x, std::vector<float>(size_t(n), float(b)), y);
}

}  // namespace

bool is_ode_sampler(const std::string& name) {
  return name == "euler" || name == "euler-a" || name == "heun" || name == "dpm++2m";
}

std::vector<double> schedule_sigmas(const NoiseSchedule& s) {
  std::vector<double> out;
  for (double ab : s.alpha_bar) out.push_back(std::sqrt((1.0 - ab) / ab));
  return out;
}

double timestep_of_sigma(const std::vector<double>& sigmas, double sigma) {
  AIGC_CHECK(!sigmas.empty(), "timestep_of_sigma: empty schedule");
  if (sigma <= sigmas.front()) return 0.0;
  if (sigma >= sigmas.back()) return double(sigmas.size() - 1);
  const size_t hi = size_t(std::upper_bound(sigmas.begin(), sigmas.end(), sigma) - sigmas.begin()), lo = hi - 1;
  const double w = (std::log(sigma) - std::log(sigmas[lo])) / (std::log(sigmas[hi]) - std::log(sigmas[lo]));
  return double(lo) + w;
}

std::vector<double> sampling_sigmas(const std::string& spacing, int64_t steps, double sigma_min, double sigma_max,
                                    const std::vector<double>& schedule) {
  AIGC_CHECK(steps >= 1, "sample: steps must be at least 1");
  AIGC_CHECK(sigma_min > 0 && sigma_max > sigma_min, "sample: need 0 < sigma_min < sigma_max");
  std::vector<double> out;
  if (spacing == "karras") {
    const double rho = 7.0, a = std::pow(sigma_max, 1 / rho), b = std::pow(sigma_min, 1 / rho);
    for (int64_t i = 0; i < steps; i++)
      out.push_back(std::pow(a + (steps == 1 ? 0.0 : double(i) / double(steps - 1)) * (b - a), rho));
  } else if (spacing == "uniform") {
    const int64_t T = int64_t(schedule.size());
    AIGC_CHECK(T >= 2 && steps <= T, "sample: uniform spacing needs 1 <= steps <= T = " + std::to_string(T));
    for (int64_t k = steps - 1; k >= 0; k--) out.push_back(schedule[size_t(k * T / steps)]);
  } else {
    fail("sample: unknown noise-level spacing '" + spacing + "' (karras, uniform)");
  }
  out.push_back(0.0);
  return out;
}

Tensor ode_sample(const std::string& sampler, const Denoiser& denoise, Tensor x, const std::vector<double>& sigmas,
                  Rng& rng, const std::function<void(int64_t, const Tensor&)>& on_step) {
  AIGC_CHECK(is_ode_sampler(sampler),
             "sample: unknown sampler '" + sampler + "' (euler, euler-a, heun, dpm++2m, ddim, ddpm)");
  AIGC_CHECK(sigmas.size() >= 2 && sigmas.back() == 0.0, "sample: the noise levels must end at 0");
  NoGradGuard ng;
  Tensor old_denoised;  // dpm++2m: the previous step's estimate
  for (size_t i = 0; i + 1 < sigmas.size(); i++) {
    const double s = sigmas[i], s_next = sigmas[i + 1];
    AIGC_CHECK(s > s_next, "sample: the noise levels must descend");
    Tensor denoised = denoise(x, s);
    if (sampler == "dpm++2m") {
      // In t = -log sigma: x' = (s'/s) x + (1 - e^-h) D~, D~ = D corrected by the previous D (2M); the last step
      // (to sigma 0) takes the estimate itself.
      if (s_next == 0.0) {
        x = denoised;
      } else {
        const double h = std::log(s / s_next);
        Tensor d = denoised;
        if (old_denoised.defined()) {
          const double h_last = std::log(sigmas[i - 1] / s), r = h_last / h;
          d = lin(1.0 + 1.0 / (2.0 * r), denoised, -1.0 / (2.0 * r), old_denoised);
        }
        x = lin(s_next / s, x, -std::expm1(-h), d);
      }
      old_denoised = denoised;
    } else {
      Tensor deriv = lin(1.0 / s, x, -1.0 / s, denoised);  // dx/dsigma = (x - D) / sigma
      double to = s_next, up = 0.0;
      if (sampler == "euler-a" && s_next > 0.0) {
        // Ancestral: go deterministically to sigma_down, then add noise of sigma_up (sigma_down^2 + sigma_up^2 =
        // sigma_next^2), which is the DDPM posterior's noise in this parametrization.
        up = std::min(s_next, std::sqrt(s_next * s_next * (s * s - s_next * s_next) / (s * s)));
        to = std::sqrt(s_next * s_next - up * up);
      }
      Tensor next = lin(1.0, x, to - s, deriv);
      if (sampler == "heun" && s_next > 0.0) {
        Tensor deriv2 = lin(1.0 / s_next, next, -1.0 / s_next, denoise(next, s_next));
        next = lin(1.0, x, to - s, lin(0.5, deriv, 0.5, deriv2));
      }
      x = up > 0.0 ? lin(1.0, next, up, randn(x.shape(), rng)) : next;
    }
    if (on_step) on_step(int64_t(i), x);
  }
  return x;
}

}  // namespace aigc

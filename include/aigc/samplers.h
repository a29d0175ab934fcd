// Diffusion samplers that solve the probability-flow ODE (or its SDE) in the noise-level parametrization of Karras
// et al. 2022: x = x0 + sigma n with sigma = sqrt((1 - abar) / abar), so a DDPM model's x_t is x / sqrt(1 + sigma^2).
// The solvers see only a denoiser D(x, sigma) ~ E[x0 | x] (for a noise-predicting network,
// D = x - sigma eps(x / sqrt(1 + sigma^2), t(sigma))):
//   euler      x += (sigma' - sigma) d,  d = (x - D) / sigma                                      (order 1)
//   euler-a    the same step to sigma_down, then fresh noise sigma_up (ancestral, stochastic)
//   heun       Euler, then the trapezoid of d at both ends (Karras et al.'s 2nd-order step)     (order 2)
//   dpm++2m    DPM-Solver++(2M) (Lu et al. 2022): exponential integrator in log sigma with a second-order
//              multistep correction from the previous denoised estimate                            (order 2)
// Noise levels: "uniform" (the model's timesteps evenly spaced, as DDIM visits them) or "karras" (rho = 7 between
// sigma_max and sigma_min), then 0.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "aigc/tensor.h"

namespace aigc {

class Rng;
struct NoiseSchedule;

// D(x, sigma): the denoised estimate of x at noise level sigma > 0.
using Denoiser = std::function<Tensor(const Tensor& x, double sigma)>;

bool is_ode_sampler(const std::string& name);  // euler, euler-a, heun, dpm++2m

// The schedule's noise levels sigma_i = sqrt((1 - abar_i) / abar_i), ascending in the timestep index.
std::vector<double> schedule_sigmas(const NoiseSchedule& s);
// The (fractional) timestep index whose noise level is sigma: linear interpolation in log sigma.
double timestep_of_sigma(const std::vector<double>& sigmas, double sigma);

// `steps` descending noise levels from sigma_max to sigma_min, then 0. spacing: "karras" or "uniform" (uniform
// needs the schedule's sigmas: the DDIM timesteps floor(k T / steps)).
std::vector<double> sampling_sigmas(const std::string& spacing, int64_t steps, double sigma_min, double sigma_max,
                                    const std::vector<double>& schedule = {});

// Runs `sampler` from x (already scaled to sigmas[0]) down the noise levels; rng draws euler-a's noise.
// on_step sees each step's index and the x it reached. Returns the final x (at sigma 0: the sample).
Tensor ode_sample(const std::string& sampler, const Denoiser& denoise, Tensor x, const std::vector<double>& sigmas,
                  Rng& rng, const std::function<void(int64_t, const Tensor&)>& on_step = {});

}  // namespace aigc

// The Fréchet distance against closed forms: zero for identical sets, ||mu1 - mu2||^2 for a shift, and
// (sigma1 - sigma2)^2 per dimension for independent Gaussians of different spread.
#include <gtest/gtest.h>

#include <cmath>

#include "aigc/fid.h"
#include "aigc/rng.h"

using namespace aigc;

TEST(Fid, MatchesClosedForms) {
  const int64_t n = 20000, dim = 4;
  Rng rng(1);
  std::vector<double> a(size_t(n * dim)), b(a.size()), c(a.size());
  for (size_t i = 0; i < a.size(); i++) {
    double x = rng.normal();
    a[i] = x;
    b[i] = x + 0.5;  // the same samples shifted: equal covariance
    c[i] = 2.0 * rng.normal() + 1.0;
  }
  EXPECT_NEAR(frechet_distance(a, a, dim), 0.0, 1e-9);
  EXPECT_NEAR(frechet_distance(a, b, dim), dim * 0.25, 1e-6);
  // N(0, 1) vs N(1, 4) per dimension: 1 (mean) + (2 - 1)^2 (spread) = 2 per dimension, up to sampling error.
  EXPECT_NEAR(frechet_distance(a, c, dim), 2.0 * dim, 0.15);
  // A correlated case: the distance does not depend on a rotation applied to both sets.
  std::vector<double> ra(a.size()), rc(c.size());
  const double cs = std::cos(0.7), sn = std::sin(0.7);
  for (int64_t i = 0; i < n; i++) {
    for (int64_t j = 0; j < dim; j += 2) {
      ra[size_t(i * dim + j)] = cs * a[size_t(i * dim + j)] - sn * a[size_t(i * dim + j + 1)];
      ra[size_t(i * dim + j + 1)] = sn * a[size_t(i * dim + j)] + cs * a[size_t(i * dim + j + 1)];
      rc[size_t(i * dim + j)] = cs * c[size_t(i * dim + j)] - sn * c[size_t(i * dim + j + 1)];
      rc[size_t(i * dim + j + 1)] = sn * c[size_t(i * dim + j)] + cs * c[size_t(i * dim + j + 1)];
    }
  }
  EXPECT_NEAR(frechet_distance(ra, rc, dim), frechet_distance(a, c, dim), 1e-6);
}

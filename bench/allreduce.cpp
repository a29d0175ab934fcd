// MPI_Allreduce (sum of floats) bandwidth between the ranks of one launch, as the gradient buckets use it:
//
//   mpirun -np N build/aigc_bench_allreduce [MAX_MIB]
//
// Rank 0 prints one JSON line per message size: the median time of the repetitions, the algorithm bandwidth
// (bytes / time) and the bus bandwidth (2 (N-1)/N x bytes / time: what each rank's link carries in a ring
// all-reduce, comparable across N). MAX_MIB: the largest message (default 64).
#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, world = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  const long max_mib = argc > 1 ? std::atol(argv[1]) : 64;
  std::vector<float> buf(size_t(max_mib) << 18, 1.0f);
  for (size_t bytes = 4096; bytes <= size_t(max_mib) << 20; bytes *= 4) {
    const int n = int(bytes / 4);
    const int reps = std::max(3, int((64u << 20) / bytes));  // about 64 MiB moved per size, at least 3 times
    std::vector<double> times;
    for (int r = 0; r < reps + 1; r++) {  // the first is a warm-up
      MPI_Barrier(MPI_COMM_WORLD);
      const double t0 = MPI_Wtime();
      MPI_Allreduce(MPI_IN_PLACE, buf.data(), n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
      double t = MPI_Wtime() - t0;
      MPI_Allreduce(MPI_IN_PLACE, &t, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);  // the slowest rank's time
      if (r > 0) times.push_back(t);
      std::fill(buf.begin(), buf.begin() + n, 1.0f);  // keep the values finite
    }
    std::sort(times.begin(), times.end());
    const double t = times[times.size() / 2];
    if (rank == 0)
      std::printf("{\"ranks\": %d, \"bytes\": %zu, \"seconds\": %.6e, \"algbw_gbps\": %.3f, \"busbw_gbps\": %.3f}\n",
                  world, bytes, t, double(bytes) / t / 1e9, 2.0 * (world - 1) / world * double(bytes) / t / 1e9);
  }
  MPI_Finalize();
  return 0;
}

// Data-parallel training over MPI: the GradSync the training loop uses when aigc runs under an MPI launcher
// (mpirun, or Slurm's srun). See docs/distributed.md.
#pragma once
#include <cstdint>
#include <memory>

#include "aigc/train_loop.h"

namespace aigc {

struct DistOptions {
  // A collective that gets no answer for this long ends the run, naming the rank(s) found gone. It must cover
  // the longest pause of rank 0 alone (writing a checkpoint).
  double comm_timeout_s = 45;
  int64_t bucket_bytes = 4 << 20;  // gradients per all-reduce (PyTorch DDP: 25 MB; ours are smaller models)
};

// True when an MPI launcher started this process (its rank variables are in the environment).
bool launched_by_mpi();

// Joins the launcher's ranks. MPI lives on one communication thread that makes every MPI call, so gradient
// buckets are reduced while the training thread goes on with backward. Throws when aigc was built without MPI.
std::unique_ptr<GradSync> join_ranks(const DistOptions& opt);

}  // namespace aigc

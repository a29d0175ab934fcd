#!/usr/bin/python3
"""FID-FMNIST against the number of sampling steps, as a PNG: one DDIM line per model, DDPM as single markers.

    fid_steps_plot.py OUT.png < rows        each row: "LABEL SAMPLER STEPS N FID", e.g. "aigc ddim 50 1000 195.776"

Used by bench/diffusion_steps (one checkpoint) and bench/diffusion_seeds (aigc's and PyTorch's models of a seed).
"""
import sys

rows = [line.split() for line in sys.stdin if line.strip()]
if not rows:
    sys.exit("fid_steps_plot: no rows to plot")
try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    sys.exit("no plot: python3-matplotlib is missing (scripts/setup.sh installs it)")

labels = list(dict.fromkeys(r[0] for r in rows))  # first-seen order
fig, ax = plt.subplots(figsize=(5, 3.2), dpi=120)
for i, label in enumerate(labels):
    ddim = sorted((int(k), float(f), n) for lab, s, k, n, f in rows if lab == label and s == "ddim")
    if ddim:
        ns = ", ".join(sorted({n for _, _, n in ddim}, key=int))
        ax.plot([k for k, _, _ in ddim], [f for _, f, _ in ddim], "o-", color=f"C{i}",
                label=f"{label}: DDIM, eta 0 (n = {ns})")
    for lab, s, k, n, f in rows:
        if lab == label and s == "ddpm":
            ax.plot([int(k)], [float(f)], "s", color=f"C{i}", markeredgecolor="black",
                    label=f"{label}: DDPM ancestral (n = {n})")
ax.set_xscale("log")
ax.set_xlabel("sampling steps")
ax.set_ylabel("FID-FMNIST (lower is better)")
ax.grid(True, which="both", alpha=0.3)
ax.legend(fontsize=7)
fig.tight_layout()
fig.savefig(sys.argv[1])
print("plot:", sys.argv[1])

#!/usr/bin/python3
"""Summarizes bench/results/wallclock.tsv (rows of bench/wallclock) as a Markdown table: for each family and time
mark, each engine's steps and FID-FMNIST per seed, mean +- sd, and the paired difference aigc - PyTorch over the
seeds both ran.
Usage: bench/wallclock_table.py [TSV]"""
import csv
import os
import statistics
import sys


def spread(xs):
    if len(xs) == 1:
        return "%.1f (one seed)" % xs[0]
    return "%.1f ± %.1f" % (statistics.mean(xs), statistics.stdev(xs))


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "results", "wallclock.tsv")
    rows = list(csv.DictReader(open(path), delimiter="\t"))
    cells = {}
    for r in rows:  # a seed rerun replaces its earlier row
        cells[(r["family"], float(r["minutes"]), r["engine"], int(r["seed"]))] = r
    print("| family | minutes | engine | seeds | steps | FID-FMNIST per seed | mean ± sd | n (floor) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    keys = sorted({(f, m) for f, m, _, _ in cells})
    for family, minutes in keys:
        by_engine = {}
        for engine in ("aigc", "PyTorch"):
            seeds = sorted(s for f, m, e, s in cells if (f, m, e) == (family, minutes, engine))
            got = [cells[(family, minutes, engine, s)] for s in seeds]
            by_engine[engine] = {s: float(r["fid"]) for s, r in zip(seeds, got)}
            if not got:
                continue
            print("| %s | %g | %s | %s | %s | %s | %s | %s (%s) |" % (
                family, minutes, engine, ", ".join(map(str, seeds)), ", ".join(r["steps"] for r in got),
                ", ".join(r["fid"] for r in got), spread([float(r["fid"]) for r in got]), got[0]["n"],
                got[0]["floor"]))
        both = sorted(set(by_engine["aigc"]) & set(by_engine["PyTorch"]))
        if both:
            diff = [by_engine["aigc"][s] - by_engine["PyTorch"][s] for s in both]
            print("| %s | %g | aigc - PyTorch | %s | | %s | %s | |" % (
                family, minutes, ", ".join(map(str, both)), ", ".join("%+.1f" % d for d in diff), spread(diff)))


if __name__ == "__main__":
    main()

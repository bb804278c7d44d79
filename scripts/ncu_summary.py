#!/usr/bin/env python3
"""Sums GPU kernel time by kernel name from an Nsight Compute CSV (one row per launch):

    ncu --clock-control none --metrics gpu__time_duration.sum --csv --page raw CMD > k.csv
    python3 scripts/ncu_summary.py k.csv [--per N] [--top 25]

`--per N` divides totals by N (e.g. the number of timed calls the command made, warm-up included) so
that the table reads as GPU time per call. Launch counts tell how many kernels a call takes, which
bounds what launch overhead alone costs.
"""
import argparse
import collections
import csv
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("--per", type=float, default=1.0)
    ap.add_argument("--top", type=int, default=25)
    a = ap.parse_args()
    rows = [r for r in csv.reader(open(a.csv, errors="replace")) if len(r) > 3]
    head = next((i for i, r in enumerate(rows) if "Kernel Name" in r), None)
    if head is None:
        sys.exit(f"{a.csv}: no 'Kernel Name' column (is it ncu --csv --page raw output?)")
    cols = rows[head]
    name_col, time_col = cols.index("Kernel Name"), cols.index("gpu__time_duration.sum")
    scale = {"nsecond": 1e-3, "usecond": 1.0, "msecond": 1e3, "second": 1e6}
    unit = 1e-3
    total, count = collections.Counter(), collections.Counter()
    for r in rows[head + 1 :]:
        v = r[time_col].replace(",", "")
        if v in scale:
            unit = scale[v]
            continue
        try:
            us = float(v) * unit
        except ValueError:
            continue
        name = r[name_col].split("(")[0][:90]
        total[name] += us
        count[name] += 1
    all_us, all_n = sum(total.values()), sum(count.values())
    print(f"{all_n / a.per:.0f} launches, {all_us / a.per / 1000:.3f} ms of kernel time per call")
    for name, us in total.most_common(a.top):
        print(f"{us / a.per / 1000:9.3f} ms {100 * us / all_us:5.1f}% {count[name] / a.per:7.1f}x  {name}")


if __name__ == "__main__":
    main()

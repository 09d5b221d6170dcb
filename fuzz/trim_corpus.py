#!/usr/bin/env python3
"""Trim a fuzz corpus to at most CAP files: the seeds, plus the inputs that add
the most coverage edges beyond them (greedy), read from a libFuzzer merge
control file. Usage, from fuzz/:

    t=session
    mkdir -p /tmp/min/$t && cp corpus/$t/seed-* /tmp/min/$t/
    RUSTC_BOOTSTRAP=1 cargo fuzz run $t /tmp/min/$t corpus/$t -- \
        -merge=1 -use_counters=0 -merge_control_file=/tmp/mcf-$t
    python3 trim_corpus.py /tmp/mcf-$t /tmp/keep/$t 100
    rm -r corpus/$t && mv /tmp/keep/$t corpus/$t
"""
import os
import shutil
import sys

control, out, cap = sys.argv[1], sys.argv[2], int(sys.argv[3])
lines = open(control).read().split("\n")
n, n_seeds = int(lines[0]), int(lines[1])
paths = lines[2 : 2 + n]
features = {}
for line in lines[2 + n :]:
    f = line.split()
    if f and f[0] == "FT":
        features[int(f[1])] = set(map(int, f[2:]))
everything = set().union(*features.values())
covered = set().union(*(features.get(i, set()) for i in range(n_seeds)))
seed_cov = len(covered)
rest = {i: features.get(i, set()) for i in range(n_seeds, n)}
chosen = []
while n_seeds + len(chosen) < cap:
    # Most new edges first; the smaller file on a tie.
    best = max(rest, default=None,
               key=lambda i: (len(rest[i] - covered), -os.path.getsize(paths[i])))
    if best is None or not rest[best] - covered:
        break
    chosen.append(best)
    covered |= rest.pop(best)
shutil.rmtree(out, ignore_errors=True)
os.makedirs(out)
for i in list(range(n_seeds)) + chosen:
    shutil.copy(paths[i], out)
print(f"{n_seeds} seeds cover {seed_cov}/{len(everything)} edges; "
      f"+{len(chosen)} inputs cover {len(covered)}/{len(everything)}")

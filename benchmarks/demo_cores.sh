#!/usr/bin/env bash
# How much the second core buys: the README's demo (synthetic Method I, seed 0) on an idle machine,
# three times from empty workdirs (about 11 minutes on 2 cores):
#
#   bash benchmarks/demo_cores.sh OUTDIR
#
#   both      every core, the default (one CPU device per core: two here)
#   pin1_same pinned to one core (taskset -c 0) with the same two CPU devices (--config.cpu_devices=2):
#             the same computation in the same order, so the same training path and the same numbers;
#             the fair measure of what the second core buys
#   pin1      pinned to one core as a user would run it: one CPU device, whose sums run in another
#             order, so training takes another path and f and g may stop at other steps
#
# Prints and writes to OUTDIR/demo_cores.txt, per run: wall seconds, each stage's seconds, the steps
# where f and g stopped, seconds per step of f and g (their stage time over their steps: compilation
# and scoring included), GT-known loc; then the ratios of `both` to each pinned run.
set -euo pipefail
OUT=${1:?usage: demo_cores.sh OUTDIR}
HERE=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
LOG="$OUT/demo_cores.txt"
cd "$HERE"
command -v taskset > /dev/null || { echo "taskset (util-linux) is needed to pin a run to one core" >&2; exit 2; }
[ "$(nproc --all)" -ge 2 ] || { echo "this machine has one core: nothing to compare" >&2; exit 2; }
unset JAX_COMPILATION_CACHE_DIR  # every run compiles from scratch, as a fresh clone does
echo "# wsol-jax demo_cores $(date -u +%Y-%m-%dT%H:%M:%SZ) commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(nproc --all) cores, load $(cut -d' ' -f1 /proc/loadavg)" | tee "$LOG"

demo() {  # NAME PREFIX... -- EXTRA_ARGS...
  local name=$1; shift
  local prefix=()
  while [ "$1" != "--" ]; do prefix+=("$1"); shift; done; shift
  rm -rf "${OUT:?}/$name"
  local start end
  start=$(date +%s.%N)
  "${prefix[@]}" python main.py --config=configs/synthetic.py:method1 --workdir="$OUT/$name" "$@" > "$OUT/$name.log" 2>&1
  end=$(date +%s.%N)
  python - "$OUT/$name" "$start" "$end" <<'PY' | tee -a "$LOG"
import json, os, sys
from wsol_jax.workdir import read_json
w, start, end = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
stages = read_json(os.path.join(w, 'timings.json'))['total_s']
results = read_json(os.path.join(w, 'results.json'))
quality = read_json(os.path.join(w, 'f_quality.json'))['f_classifier']
g_last = max(int(s) for s in read_json(os.path.join(w, 'g_history.json'))['points'])
f_last = quality['last_step']
summary = {
    'run': os.path.basename(w),
    'wall_s': round(end - start, 1),
    'stages_s': stages,
    'f_steps': f_last,
    'g_steps': g_last,
    'f_s_per_step': round(stages['train_f'] / f_last, 4),
    'g_s_per_step': round(stages['train_g'] / g_last, 4),
    'gt_known_loc': round(100 * results['results']['weight_map_selected']['gt_known_loc'], 2),
}
print(json.dumps(summary))
PY
}

demo both env -- 
demo pin1_same taskset -c 0 -- --config.cpu_devices=2
demo pin1 taskset -c 0 --

python - "$LOG" <<'PY' | tee -a "$LOG"
import json, sys
runs = {r['run']: r for r in (json.loads(line) for line in open(sys.argv[1]) if line.startswith('{'))}
both = runs['both']
for name in ('pin1_same', 'pin1'):
    r = runs[name]
    print(
        f"both / {name}: wall {both['wall_s'] / r['wall_s']:.2f}, f per step {both['f_s_per_step'] / r['f_s_per_step']:.2f}, "
        f"g per step {both['g_s_per_step'] / r['g_s_per_step']:.2f}"
        + (' (same path: same steps and numbers)' if (r['f_steps'], r['g_steps'], r['gt_known_loc'])
           == (both['f_steps'], both['g_steps'], both['gt_known_loc']) else ' (another path)')
    )
PY

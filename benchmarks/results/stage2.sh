#!/usr/bin/env bash
# The stage-2 leaderboard of the documentation (docs/results.md): train every fold (cached under
# user_data/data/checkpoints), compare, then collect every number of the stage-2 tables into
# benchmarks/results/stage2.json (benchmarks/results/stage2_collect.py). Put the tables into docs/results.md with:
#   python benchmarks/readme_results.py --write
# The run folders go to runs/stage2/ (git-ignored); only stage2.json is committed.
set -euo pipefail
cd "$(dirname "$0")/../.."
started=$(date +%s)
python3 -m engine compare strategies/llm_signal.py --config benchmarks/results/stage2.toml \
  --predictors patchtst,lightgbm,neural,naive,momentum --symbols BTC/USDT,ETH/USDT --jobs 2 "$@"
wall=$(( $(date +%s) - started ))
command="bash benchmarks/results/stage2.sh"
if [ "$#" -gt 0 ]; then command="$command $*"; fi
python3 benchmarks/results/stage2_collect.py --wall-s "$wall" --command "$command"

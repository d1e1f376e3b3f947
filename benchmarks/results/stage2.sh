#!/usr/bin/env bash
# The stage-2 leaderboard of the README: train every fold (cached under user_data/data/checkpoints), then compare.
set -euo pipefail
cd "$(dirname "$0")/../.."
python3 -m engine compare strategies/llm_signal.py --config benchmarks/results/stage2.toml \
  --predictors patchtst,lightgbm,neural,naive,momentum --symbols BTC/USDT,ETH/USDT --jobs 2 "$@"

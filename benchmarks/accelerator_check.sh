#!/usr/bin/env bash
# What a CPU cannot check, in one go on one GPU or TPU host:
#
#   benchmarks/accelerator_check.sh [--tiny] [--corpus PATH] [OUT_DIR]
#
# 1. the attention paths (masked, and cuDNN's fused kernel through jax.nn.dot_product_attention)
#    agree in bfloat16 with a float32 reference, forward and gradients, with timings (and Pallas's
#    flash-attention kernel, a candidate: timed, never failing the check); bfloat16
#    train steps on the FSDP mesh agree with float32; GPT-2's embedding gradient (a scatter-add) is
#    timed on uniform and on text-like tokens, and the loss's gradient on its logits; the char step
#    is timed fed as bench.py feeds it and as the training loop does (benchmarks/accelerator_check.py);
# 2. bench.py --config gpt2 in bfloat16: tokens/s, MFU, memory, and a profile of one step
#    (OUT_DIR/gpt2_step_trace.json.gz, a Perfetto trace; its busiest kinds of XLA op in the summary;
#    OUT_DIR/gpt2_step_hlo.txt.gz, the compiled step, which says what each of those ops computes);
# 3. the same with the update's 480 sequences in 10 micro-batches of 48 instead of 40 of 12; and
#    with every matrix product in cuBLAS (XLA's Triton GEMM fusions off, as NVIDIA's JAX images set);
# 4. train.py --config char, all 5000 iterations: wall time and final val loss (nanoGPT reaches
#    1.4697 in about 3 minutes on an A100), then sample.py from its checkpoint: 500 characters
#    (--tiny: 100), past block_size, so the key/value cache is rebuilt (OUT_DIR/sample_char.log);
# 5. train.py --config char_fast (RoPE, QK-norm, Muon; 2500 iterations): when it first reaches 1.4697.
# Prints a summary (with each stage's wall time) and writes OUT_DIR/accelerator_check.json
# (OUT_DIR: out-accelerator-check).
# --tiny runs every step at toy sizes: about 2 to 3 minutes on 2 CPU cores.
# --corpus: tinyshakespeare's input.txt, for a machine with no network (else it is downloaded).
# PYTHON picks the interpreter (default python3); the clone is put on its import path.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export GPTJAX_COMPILATION_CACHE=0  # the runs compile as a first run does, however often the check runs

tiny=() corpus="" out=out-accelerator-check
while [ $# -gt 0 ]; do
    case $1 in
        --tiny) tiny=(--tiny) ;;
        --corpus) corpus=$(realpath "$2"); shift ;;
        -*) echo "accelerator_check.sh: unknown option $1 (usage: [--tiny] [--corpus PATH] [OUT_DIR])" >&2; exit 2 ;;
        *) out=$1 ;;
    esac
    shift
done
mkdir -p "$out"
out=$(realpath "$out")

"$PY" - <<'EOF' || exit 2
import importlib.util, sys
needed = {"jax": "jax", "flax": "flax", "optax": "optax", "orbax": "orbax-checkpoint", "numpy": "numpy",
          "ml_collections": "ml_collections", "absl": "absl-py", "rich": "rich"}
missing = [package for module, package in needed.items() if importlib.util.find_spec(module) is None]
if missing:
    sys.exit(f"accelerator_check.sh: {sys.executable} lacks {', '.join(missing)}: pip install {' '.join(missing)} "
             "(with no network: pip download them elsewhere, bring the wheels, pip install --no-index WHEELS)")
EOF

if [ ${#tiny[@]} -gt 0 ]; then
    small=(--config.n_layer=2 --config.n_head=2 --config.n_embd=64 --config.block_size=64 --config.batch_size=4)
    bench=(--config gpt2 "${small[@]}" --config.gradient_accumulation_steps=2 --steps 2)
    bench_wide=(--config gpt2 "${small[@]}" --config.batch_size=8 --config.gradient_accumulation_steps=1 --steps 2)
    bench_cublas=("${bench[@]}")
    short=(--config.max_iters=20 --config.eval_interval=10 --config.eval_iters=2 --config.log_interval=5)
    char=(--config char "${small[@]}" "${short[@]}")
    char_fast=(--config char_fast "${small[@]}" "${short[@]}")
    new_tokens=100
else
    bench=(--config gpt2 --steps 10)
    bench_wide=(--config gpt2 --config.batch_size=48 --config.gradient_accumulation_steps=10 --steps 10)
    bench_cublas=(--config gpt2 --steps 5)
    char=(--config char)
    char_fast=(--config char_fast)
    new_tokens=500
fi
data=(--config.data_dir="$out/data")
[ -n "$corpus" ] && data+=(--config.input_file="$corpus")

failed=() check_start=$EPOCHREALTIME
: > "$out/wall_s.tsv"
record_wall_s() {  # record_wall_s NAME START: seconds since START in OUT/wall_s.tsv
    printf '%s\t%s\n' "$1" "$(awk "BEGIN {print $EPOCHREALTIME - $2}")" >> "$out/wall_s.tsv"
}
step() {  # step NAME COMMAND...: run it with its output in OUT/NAME.log; a failure does not stop the rest
    local name=$1 start=$EPOCHREALTIME; shift
    "$@" 2>&1 | tee "$out/$name.log" || failed+=("$name")
    record_wall_s "$name" "$start"
}
echo "== 0/5 the char dataset (tinyshakespeare)"
step prepare "$PY" prepare.py --config char "${data[@]}"
echo "== 1/5 attention paths, bfloat16 train steps, GPT-2's embedding gradient, the char step on random and on text tokens"
step checks "$PY" benchmarks/accelerator_check.py checks "${tiny[@]}" --text "$out/data/shakespeare_char/train.bin" \
    "$out/checks.json"
echo "== 2/5 bench.py ${bench[*]} --config.dtype=bfloat16, one step profiled"
rm -rf "${out:?}/profile_gpt2"
step bench_gpt2 "$PY" bench.py "${bench[@]}" --config.dtype=bfloat16 --profile "$out/profile_gpt2" \
    --json "$out/bench_gpt2.json"
cp "$out"/profile_gpt2/plugins/profile/*/perfetto_trace.json.gz "$out/gpt2_step_trace.json.gz" || failed+=(gpt2_step_trace)
cp "$out/profile_gpt2/train_step.hlo.txt.gz" "$out/gpt2_step_hlo.txt.gz" || failed+=(gpt2_step_hlo)
echo "== 3/5 bench.py ${bench_wide[*]} --config.dtype=bfloat16"
step bench_gpt2_wide "$PY" bench.py "${bench_wide[@]}" --config.dtype=bfloat16 --json "$out/bench_gpt2_wide.json"
echo "== 3/5 bench.py ${bench_cublas[*]} --config.dtype=bfloat16, XLA's Triton GEMMs off"
step bench_gpt2_cublas env XLA_FLAGS="${XLA_FLAGS:+$XLA_FLAGS }--xla_gpu_enable_triton_gemm=false" \
    "$PY" bench.py "${bench_cublas[@]}" --config.dtype=bfloat16 --json "$out/bench_gpt2_cublas.json"
train() {  # train NAME ARGS...: a whole run in OUT/NAME
    local name=$1; shift
    rm -rf "${out:?}/$name"
    step "train_$name" "$PY" train.py "$@" "${data[@]}" --config.out_dir="$out/$name"
}
echo "== 4/5 train.py ${char[*]}, then sample.py from it"
train char "${char[@]}"
step sample_char "$PY" sample.py --out_dir="$out/char" --num_samples=1 --max_new_tokens=$new_tokens --seed=1
echo "== 5/5 train.py ${char_fast[*]}"
train char_fast "${char_fast[@]}"
record_wall_s whole_check "$check_start"
echo "== summary ($out/accelerator_check.json)"
"$PY" benchmarks/accelerator_check.py summary "$out"
if [ ${#failed[@]} -gt 0 ]; then
    echo "accelerator_check.sh: failed: ${failed[*]} (logs in $out)" >&2
    exit 1
fi

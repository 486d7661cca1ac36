"""Time full-size ciwGAN training steps on a CUDA device under several settings.

Not a test: a script for a GPU machine that prints one table (steps/s and peak memory
per variant) and, with ``--profile``, the top CUDA kernels of the fastest variant::

    python tests/benchmarks/ciwgan_cuda_variants.py --steps 20 --json out.json --profile

A step is what the papers count: 5 critic updates and 1 generator/Q update at batch 64.
Each variant builds a fresh trainer from the same seed, runs warm-up steps (which also
absorb cuDNN autotuning and compilation), then times ``--steps`` steps between CUDA
synchronisations.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from wavelens import resolve_placement  # noqa: E402
from wavelens.plugins.ciwgan.networks import CiwGAN  # noqa: E402
from wavelens.plugins.ciwgan.trainer import GANConfig, GANTrainer  # noqa: E402

VARIANTS = {
    # name: (precision, tf32, cudnn_benchmark, networks to compile, cuda_convs)
    "cudnn fp32": ("fp32", False, False, False, "cudnn"),
    "cudnn fp32+tf32": ("fp32", True, False, False, "cudnn"),
    "cudnn bf16": ("bf16", False, False, False, "cudnn"),
    "cudnn bf16+cudnn.benchmark": ("bf16", True, True, False, "cudnn"),
    "gemm fp32": ("fp32", False, False, False, "gemm"),
    "gemm fp32+tf32": ("fp32", True, False, False, "gemm"),
    "gemm bf16": ("bf16", False, False, False, "gemm"),
    "gemm bf16+compile(G)": ("bf16", False, False, "G", "gemm"),
    "gemm bf16+compile(G,D,Q)": ("bf16", False, False, "GDQ", "gemm"),
}


def build(precision: str, workdir: Path, dim: int, convs: str) -> GANTrainer:
    torch.manual_seed(0)
    config = GANConfig(code="categorical", steps=10**9, batch_size=64, checkpoint_every=10**9,
                       sample_every=10**9)
    network = CiwGAN(8, dim=dim, cuda_convs=convs)
    trainer = GANTrainer(network, config, resolve_placement("cuda", precision), workdir)
    trainer.net.train()
    return trainer


def step(trainer: GANTrainer, data: torch.Tensor) -> dict[str, torch.Tensor]:
    record: dict[str, torch.Tensor] = {}
    for _ in range(trainer.config.d_updates):
        record.update(trainer.critic_update(data))
    record.update(trainer.generator_update())
    return record


def time_variant(name: str, args: argparse.Namespace, data: torch.Tensor) -> dict[str, object]:
    precision, tf32, cudnn_benchmark, compile_g, convs = VARIANTS[name]
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = cudnn_benchmark
    with tempfile.TemporaryDirectory() as workdir:
        trainer = build(precision, Path(workdir), args.dim, convs)
        for letter, module in (("G", trainer.net.generator), ("D", trainer.net.discriminator),
                               ("Q", trainer.net.q_network)):
            if compile_g and letter in compile_g:
                module.compile()
        for _ in range(args.warmup):
            step(trainer, data)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        for _ in range(args.steps):
            record = step(trainer, data)
        torch.cuda.synchronize()
        elapsed = time.perf_counter() - started
        first_peak = torch.cuda.max_memory_allocated()
        for _ in range(args.steps):
            record = step(trainer, data)
        torch.cuda.synchronize()
        later_peak = torch.cuda.max_memory_allocated()
        finite = all(torch.isfinite(v).item() for v in record.values())
        result = {"variant": name, "steps_per_s": args.steps / elapsed, "s_per_step": elapsed / args.steps,
                  "peak_gib": first_peak / 2**30, "peak_after_more_steps_gib": later_peak / 2**30,
                  "finite_losses": finite}
        if args.profile and name == args.profile_variant:
            result["profile"] = profile(trainer, data)
        del trainer
    torch.cuda.empty_cache()
    return result


def profile(trainer: GANTrainer, data: torch.Tensor) -> str:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            step(trainer, data)
        torch.cuda.synchronize()
    return prof.key_averages().table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=70)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--profile-variant", default="gemm bf16")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("needs a CUDA device")
    data = (torch.randn(1024, 1, 16384) * 0.1).cuda()
    results = []
    for name in args.variants:
        try:
            results.append(time_variant(name, args, data))
        except Exception as error:  # report and go on with the next variant
            results.append({"variant": name, "error": f"{type(error).__name__}: {error}"[:400]})
        print(json.dumps({k: v for k, v in results[-1].items() if k != "profile"}), flush=True)
    for result in results:
        if "profile" in result:
            print(result["profile"])
    print(f"\n{torch.cuda.get_device_name()}  torch {torch.__version__}  dim {args.dim}  batch 64")
    print(f"{'variant':36s} {'steps/s':>8s} {'s/step':>8s} {'peak GiB':>9s} {'later':>7s}")
    for r in results:
        if "error" in r:
            print(f"{r['variant']:36s} failed: {r['error'][:120]}")
        else:
            print(f"{r['variant']:36s} {r['steps_per_s']:8.2f} {r['s_per_step']:8.4f} "
                  f"{r['peak_gib']:9.2f} {r['peak_after_more_steps_gib']:7.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

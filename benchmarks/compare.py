#!/usr/bin/python3
"""Side-by-side comparison of the C++ U-Net (bench_unet) and the PyTorch reference (pytorch_unet.py).

    /usr/bin/python3 benchmarks/compare.py BUILD/benchmarks/bench_unet [--fma-peak BUILD/benchmarks/fma_peak]
        [--rounds 3] [--threads 2] [--modes train,forward] [--train-batch 128] [--forward-batch 64]
        [--train-iters 5] [--train-warmup 1] [--forward-iters 10] [--forward-warmup 2] [--forward-grad]
        [--precisions fp32,bf16] [--json OUT.json] [--python /usr/bin/python3]

Builds nothing (benchmarks/compare.sh builds, then calls this). For each mode it runs R rounds; every round runs
PyTorch and ours once per --precisions entry (bench_unet --precision P), each in a fresh process, rotating which
goes first. Each program times its own iterations and prints one JSON line; peak memory is the process's own
ru_maxrss, cross-checked with the rusage that os.wait4 returns for that child. The FMA peak (fma_peak) is measured
once, on 1 and N threads.

Printed: one Markdown table with, per mode, the median over rounds of each program's median images/s, the ratio
ours / PyTorch, the peak resident memory (MiB, max over rounds) and the achieved GFLOP/s (FLOPs per image counted
from the layer shapes, see README.md) with its share of the measured N-thread FMA peak.

Measure on a quiet machine: before each run the CPU time other processes use is sampled for one second from
/proc/stat (in busy cores) and kept in --json; with two OpenMP threads on two cores, any other busy process makes
both programs many times slower. (The 1-minute load average is no use here: it still counts the previous run.)
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bench_unet", help="path of the bench_unet executable (Release build)")
    p.add_argument("--fma-peak", help="path of fma_peak (default: next to bench_unet)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2, help="threads for both programs (default 2: this machine's cores)")
    p.add_argument("--modes", default="train,forward")
    p.add_argument("--train-batch", type=int, default=128)
    p.add_argument("--forward-batch", type=int, default=64)
    p.add_argument("--train-iters", type=int, default=5)
    p.add_argument("--train-warmup", type=int, default=1)
    p.add_argument("--forward-iters", type=int, default=10)
    p.add_argument("--forward-warmup", type=int, default=2)
    p.add_argument("--forward-grad", action="store_true",
                   help="PyTorch forward with autograd on (default: torch.no_grad(), as sampling runs it)")
    p.add_argument("--precisions", default="fp32",
                   help="matmul precisions of ours, comma-separated (fp32,bf16): one row each against the same "
                        "PyTorch runs")
    p.add_argument("--python", default="/usr/bin/python3", help="interpreter with Debian's torch")
    p.add_argument("--json", help="also write every run and the summary to this file")
    p.add_argument("--max-load", type=float, default=0.2,
                   help="warn when other processes keep more than this many cores busy just before a run")
    a = p.parse_args(argv)
    a.modes = [m for m in a.modes.split(",") if m]
    for m in a.modes:
        if m not in ("train", "forward"):
            p.error(f"unknown mode {m!r} (train, forward)")
    a.precisions = [x for x in a.precisions.split(",") if x]
    for x in a.precisions:
        if x not in ("fp32", "bf16"):
            p.error(f"unknown precision {x!r} (fp32, bf16)")
    if not a.precisions:
        p.error("--precisions needs at least one of fp32, bf16")
    if a.rounds < 1 or a.threads < 1:
        p.error("--rounds and --threads must be >= 1")
    if a.fma_peak is None:
        a.fma_peak = os.path.join(os.path.dirname(os.path.abspath(a.bench_unet)), "fma_peak")
    for path in (a.bench_unet, a.fma_peak):
        if not os.access(path, os.X_OK):
            p.error(f"{path} is not an executable (build it: benchmarks/compare.sh)")
    return a


def cpu_times():
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields), idle


def load1(seconds=1.0):
    """Busy cores (0 .. number of CPUs) over `seconds`, measured while this script sleeps."""
    import time
    total0, idle0 = cpu_times()
    time.sleep(seconds)
    total1, idle1 = cpu_times()
    total = max(1, total1 - total0)
    return (os.cpu_count() or 1) * (total - (idle1 - idle0)) / total


def run_json(cmd, threads, max_load):
    """Runs cmd in a fresh process; returns (its last JSON line as a dict, the child's ru_maxrss in MiB, load)."""
    load = load1()
    if load > max_load:
        print(f"  warning: {load:.2f} cores busy > {max_load} before this run: the numbers will be noisy",
              file=sys.stderr)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    print("  $ " + " ".join(cmd), file=sys.stderr, flush=True)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage, peak memory included
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        sys.exit(f"compare.py: {cmd[0]} failed with exit code {proc.returncode}:\n{stderr}{stdout}")
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if not lines:
        sys.exit(f"compare.py: no JSON line from {' '.join(cmd)}:\n{stdout}{stderr}")
    return json.loads(lines[-1]), usage.ru_maxrss / 1024.0, load


def machine_info():
    info = {"platform": platform.platform(), "cpus": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return info


def fmt(x, digits=1):
    return f"{x:.{digits}f}"


def main(argv=None):
    a = parse_args(argv)
    record = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": machine_info(),
              "threads": a.threads, "rounds": a.rounds, "runs": []}

    print(f"FMA peak: {a.fma_peak} --threads {a.threads}", file=sys.stderr)
    fma, _, fma_load = run_json([a.fma_peak, "--threads", str(a.threads), "--json"], a.threads, a.max_load)
    fma["busy_cores_before"] = fma_load
    record["fma_peak"] = fma
    peak = fma["gflops_threads"]

    settings = {
        "train": (a.train_batch, a.train_iters, a.train_warmup),
        "forward": (a.forward_batch, a.forward_iters, a.forward_warmup),
    }
    rows = []
    for mode in a.modes:
        batch, iters, warmup = settings[mode]
        common = ["--mode", mode, "--batch", str(batch), "--threads", str(a.threads), "--iters", str(iters),
                  "--warmup", str(warmup)]
        # With autograd on in PyTorch, ours keeps the activations too (forward-keep); otherwise Unet::predict.
        ours = [a.bench_unet] + (common if not (a.forward_grad and mode == "forward")
                                 else ["--mode", "forward-keep"] + common[2:])
        cmds = {"pytorch": [a.python, os.path.join(HERE, "pytorch_unet.py")] + common
                + (["--grad"] if a.forward_grad and mode == "forward" else [])}
        for precision in a.precisions:
            cmds["ours:" + precision] = ours + ["--precision", precision]
        results = {impl: [] for impl in cmds}
        impls = list(cmds)
        for r in range(a.rounds):
            order = impls[r % len(impls):] + impls[:r % len(impls)]  # each program first in turn
            for impl in order:
                print(f"{mode} round {r + 1}/{a.rounds}: {impl}", file=sys.stderr)
                res, child_rss, load = run_json(cmds[impl], a.threads, a.max_load)
                res["child_maxrss_mib"] = child_rss
                res["busy_cores_before"] = load
                res["round"] = r
                results[impl].append(res)
                record["runs"].append(res)
                print(f"  {res['images_per_s_median']:.2f} images/s, peak {res['peak_rss_mib']:.0f} MiB",
                      file=sys.stderr)

        def summary(rs):
            ips = [x["images_per_s_median"] for x in rs]
            flops = rs[0]["flops_per_image"]
            med = statistics.median(ips)
            return {
                "images_per_s": med,
                "images_per_s_min": min(ips),
                "images_per_s_max": max(ips),
                "peak_rss_mib": max(max(x["peak_rss_mib"], x["child_maxrss_mib"]) for x in rs),
                "baseline_rss_mib": max(x["baseline_rss_mib"] for x in rs),
                "flops_per_image": flops,
                "gflops_per_s": flops * med * 1e-9,
                "percent_of_peak": 100.0 * flops * med * 1e-9 / peak,
                "max_busy_cores_before": max(x["busy_cores_before"] for x in rs),
            }

        pt = summary(results["pytorch"])
        for precision in a.precisions:
            us = summary(results["ours:" + precision])
            # What ran: bench_unet reports fp32 where a bf16 request found no AVX512_BF16.
            ran = results["ours:" + precision][0].get("matmul_precision", precision)
            if abs(pt["flops_per_image"] - us["flops_per_image"]) > 1e-9 * us["flops_per_image"]:
                print(f"warning: FLOP counts differ: PyTorch {pt['flops_per_image']:.6g}, ours "
                      f"{us['flops_per_image']:.6g} per image (the networks are not the same?)", file=sys.stderr)
            rows.append({"mode": mode, "batch": batch, "threads": a.threads, "precision": ran, "pytorch": pt,
                         "ours": us, "ratio": us["images_per_s"] / pt["images_per_s"]})
    record["summary"] = rows

    print()
    print(f"Machine: {record['machine'].get('cpu', '?')}, {record['machine']['cpus']} CPUs; "
          f"measured FMA peak {fma['gflops_1thread']:.1f} GFLOP/s on 1 thread, {peak:.1f} GFLOP/s on "
          f"{fma['threads']} threads ({fma['arch']}, {fma['lanes']} float lanes).")
    print(f"{a.rounds} rounds per mode, each program in a fresh process; images/s = median over rounds of each "
          "run's median iteration (min-max over rounds in brackets); peak = max resident set (MiB).")
    if a.forward_grad:
        print("PyTorch forward with autograd enabled (--forward-grad).")
    else:
        print("PyTorch forward under torch.no_grad(); ours is Unet::predict, which keeps nothing either.")
    print()
    header = ["mode", "batch", "threads", "ours' matmuls", "images/s PyTorch", "images/s ours", "ours/PyTorch",
              "peak MiB PyTorch", "peak MiB ours", "GFLOP/s PyTorch (% peak)", "GFLOP/s ours (% peak)"]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(["---"] * len(header)) + "|")
    for row in rows:
        pt, us = row["pytorch"], row["ours"]
        cells = [row["mode"], str(row["batch"]), str(row["threads"]), row["precision"],
                 f"{fmt(pt['images_per_s'])} [{fmt(pt['images_per_s_min'])}-{fmt(pt['images_per_s_max'])}]",
                 f"{fmt(us['images_per_s'])} [{fmt(us['images_per_s_min'])}-{fmt(us['images_per_s_max'])}]",
                 f"{row['ratio']:.2f}x", fmt(pt["peak_rss_mib"], 0), fmt(us["peak_rss_mib"], 0),
                 f"{fmt(pt['gflops_per_s'])} ({fmt(pt['percent_of_peak'])}%)",
                 f"{fmt(us['gflops_per_s'])} ({fmt(us['percent_of_peak'])}%)"]
        print("| " + " | ".join(cells) + " |")
    max_load = max([fma_load] + [x["busy_cores_before"] for x in record["runs"]])
    print()
    print(f"FLOPs per image (forward, 2*MACs of convs, linears, attention products): "
          f"{record['runs'][0]['forward_flops_per_image'] / 1e9:.4f} G; "
          "training counted as 3x forward (estimate).")
    print(f"Most cores kept busy by other processes just before a run: {max_load:.2f}"
          + ("  <-- NOT a quiet machine, do not publish these numbers" if max_load > a.max_load else ""))

    if a.json:
        with open(a.json, "w") as f:
            json.dump(record, f, indent=1)
        print(f"wrote {a.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""ResNet-20 on one GPU, in samples per second with peak memory: one member alone, N members
sharing the GPU as N processes (what Ray runs for N trials at `gpu: 1/N`), and K members packed
in one process (`pbt.engines.packed.model.PackedTrainer`), each pack with its step run eagerly and
captured once as a CUDA graph and replayed (`--capture off,on`; `population.capture` in a run).

Every mode runs in fresh processes started from this script (hidden `--worker`), so that no
mode inherits another's CUDA context, cached memory or cuDNN choices; the driver itself never
touches the GPU. Each worker builds its CIFAR-10 member(s) as the engines do (`build_trainer`
for a member alone, `PackedTrainer.build` for a pack: a seed per member, a spread of learning
rates as a population has; bf16 autocast and channels-last as the trainer sets them on CUDA, and
the first warm-up step records what dtype the convolutions really ran in, since a pack runs its
model under `vmap`), takes `--warmup` untimed steps, says it is
ready and waits; when every worker of the mode is ready they start together and each times
`--steps` steps. Samples/s of a mode = all its members' samples / (wall time from the start
signal to the last worker's end). Peak memory is torch's (`max_memory_allocated`,
`max_memory_reserved`) over the worker's whole life, building and warm-up included; where
`nvidia-smi` exists, the GPU memory it reports (CUDA contexts included) is sampled too. The step
time per member is the mode's wall time over its steps and members: what one member's step costs
when the mode trains them all. A captured pack warms up at least `WARMUP_STEPS` + 2 steps, so its
timed steps are all replays.

    python scripts/bench_gpu_packed.py        # 1 alone, 4 x gpu 0.25, packs of 16 and 64, eager and captured
    python scripts/bench_gpu_packed.py --procs 4 --packs 4,16 --capture on --json gpu_packed.json
    python scripts/bench_gpu_packed.py --device cpu --train-images 512 --steps 3 --warmup 1 --packs 2 --procs 2

Random images are written in CIFAR-10's real file format (`tests/vision_files.py`) to a
temporary folder, `--train-images` of them (the real 50,000 by default; 5,000 held out for
validation as `trainable: cifar10` does), unless `--data-dir` names real CIFAR-10 files.
Needs torch, torchvision (to read the files once), numpy and pydantic; not Ray.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `tests.vision_files`, and the project when it is not installed
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from pbt.config import validate_config  # noqa: E402
from pbt.engines.packed.capture import WARMUP_STEPS  # noqa: E402
from pbt.engines.packed.model import PackedTrainer  # noqa: E402
from pbt.optim import set_hyperparams  # noqa: E402
from pbt.registry import build_trainer  # noqa: E402

# The module path, not the registry name: where the project is not pip-installed there are no entry points.
TRAINABLE = "trainables.vision:CIFAR10Trainer"
POLL_S = 0.0005
DATA = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")  # a trainer's tensors of images and labels


def member_hyperparams(member: int, args: argparse.Namespace) -> dict[str, float]:
    """A population's spread: learning rates 0.8x .. 1.2x of `--lr`, the same momentum and weight decay."""
    return {"lr": args.lr * (0.8 + 0.1 * (member % 5)), "momentum": args.momentum, "weight_decay": args.weight_decay}


def trainer_section(args: argparse.Namespace) -> dict:
    return {
        "model": args.model,
        "data_dir": args.data_dir,
        "batch_size": args.batch_size,
        "val_size": min(5000, args.train_images // 10),
        "optimizer": "sgd",
        "channels_last": args.channels_last == "on",
    }


# ---------------------------------------------------------------------------------------- worker


def worker(args: argparse.Namespace) -> None:
    """One process of a mode: train `--members` members (1: a plain trainer; more: one pack),
    warm up, wait for the start signal, time `--steps` steps, write the figures as JSON."""
    sync = Path(args.sync)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    started = time.perf_counter()
    config = validate_config({"trainable": TRAINABLE, "trainer": trainer_section(args)})
    first = args.first_member
    members = list(range(first, first + args.members))
    hyperparams = [member_hyperparams(member, args) for member in members]
    pack = None
    if len(members) == 1:  # a member alone: the plain trainer, stepped by its own train_step
        lead = build_trainer(config, device=device, seed=config.seed + first)
        set_hyperparams(lead.optimizer, **hyperparams[0])
        step, epoch = lead.train_step, lead.batches
        built_by = "build_trainer"
    else:  # as the packed engine builds a pack
        pack = PackedTrainer.build(config, members, hyperparams, device=device, capture=args.capture == "on")
        built_by = "PackedTrainer.build"
    if pack is not None:
        lead = pack.lead
        step, epoch = (lambda indices: pack.train_step(indices)[0]), pack.batch_indices  # the losses
    data_bytes = sum(getattr(lead, name).nbytes for name in DATA if getattr(lead, name, None) is not None)
    built_s = time.perf_counter() - started

    def batches():
        while True:  # epoch after epoch, each in a fresh order, as `train_epoch` draws them
            yield from epoch()

    sync_device = torch.cuda.synchronize if cuda else (lambda: None)
    feed = batches()
    started = time.perf_counter()
    # The first warm-up step, watched: what the convolutions and the classifier really ran in, and
    # any warning on the way (vmap says when an op has no batching rule and loops over members).
    template = pack.model.template if pack is not None else lead.model
    seen = probe(template, lambda: step(next(feed)))
    for _ in range(args.warmup - 1):
        step(next(feed))
    sync_device()
    warmup_s = time.perf_counter() - started
    print(f"worker {args.index}: built {len(members)} member(s) in {built_s:.1f} s, {args.warmup} warm-up steps "
          f"in {warmup_s:.1f} s", flush=True)

    (sync / f"ready-{args.index}").touch()
    deadline = time.monotonic() + args.timeout
    while not (sync / "go").exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"worker {args.index}: no start signal within {args.timeout} s")
        time.sleep(POLL_S)

    total = torch.zeros(len(members), device=device)
    device_used_mib = None
    start_wall = time.time()
    started = time.perf_counter()
    for i in range(args.steps):
        total += step(next(feed))  # a running sum of the loss on the device, as `train_epoch` keeps
        if cuda and i == args.steps // 2:  # mid-window: what the whole GPU holds (every process, contexts too)
            free, whole = torch.cuda.mem_get_info(device)
            device_used_mib = (whole - free) / 2**20
    sync_device()
    seconds = time.perf_counter() - started
    end_wall = time.time()

    result = {
        "index": args.index,
        "members": len(members),
        "first_member": first,
        "built_by": built_by,
        "steps": args.steps,
        "batch_size": lead.batch_size,
        "samples": len(members) * args.steps * lead.batch_size,
        "seconds": seconds,
        "start_wall": start_wall,
        "end_wall": end_wall,
        "samples_per_s": len(members) * args.steps * lead.batch_size / seconds,
        "ms_per_step": seconds / args.steps * 1e3,
        "build_s": built_s,
        "warmup_s": warmup_s,
        "mean_loss": [round(v, 4) for v in (total / max(args.steps, 1)).tolist()],
        "captured": bool(pack is not None and pack.captured),
        "train_images": len(lead.x_train),
        "data_mib": data_bytes / 2**20,
        "conv_output_dtypes": seen["conv"],
        "linear_output_dtypes": seen["linear"],
        "warnings": seen["warnings"],
        "autocast_bf16": bool(getattr(lead, "autocast", False)),
        "channels_last": getattr(lead, "memory_format", None) == torch.channels_last,
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "model": type(lead.model).__name__,
        "torch": torch.__version__,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "device": torch.cuda.get_device_name(device) if cuda else f"CPU, {args.threads} thread(s)",
        "peak_allocated_mib": torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None,
        "peak_reserved_mib": torch.cuda.max_memory_reserved(device) / 2**20 if cuda else None,
        "device_used_mid_mib": device_used_mib,
    }
    (sync / f"result-{args.index}.json").write_text(json.dumps(result))


def probe(model: torch.nn.Module, run) -> dict[str, list[str]]:
    """Run `run()` with hooks on `model`'s convolutions and linear layers: the dtypes their outputs
    had (under the pack's vmap the hooks see the batched tensors), and the warnings raised."""
    dtypes: dict[str, set[str]] = {"conv": set(), "linear": set()}
    hooks = []
    for module in model.modules():
        kind = "conv" if isinstance(module, torch.nn.Conv2d) else "linear" if isinstance(module, torch.nn.Linear) else None
        if kind:
            hooks.append(module.register_forward_hook(
                lambda _m, _i, out, kind=kind: dtypes[kind].add(str(out.dtype).replace("torch.", ""))))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run()
    finally:
        for hook in hooks:
            hook.remove()
    messages = sorted({" ".join(str(w.message).split())[:200] for w in caught})
    return {"conv": sorted(dtypes["conv"]), "linear": sorted(dtypes["linear"]), "warnings": messages}


# ---------------------------------------------------------------------------------------- driver


class SmiSampler:
    """GPU memory used as `nvidia-smi` reports it (every process, CUDA contexts included), every `period` s."""

    def __init__(self, period: float = 0.1) -> None:
        self.period = period
        self.samples: list[tuple[float, float]] = []
        self.available = shutil.which("nvidia-smi") is not None
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip()
        self.gpu = visible or "0"  # an index or a UUID: nvidia-smi -i takes either
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def read(self) -> float | None:
        if not self.available:
            return None
        try:
            out = subprocess.run(
                ["nvidia-smi", "-i", self.gpu, "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                capture_output=True, text=True, timeout=10, check=True,
            ).stdout
            return float(out.strip().splitlines()[0])
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            return None

    def start(self) -> None:
        if not self.available:
            return
        self.samples, self._stop = [], threading.Event()

        def loop() -> None:
            while not self._stop.is_set():
                value = self.read()
                if value is not None:
                    self.samples.append((time.time(), value))
                self._stop.wait(self.period)

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def peak(self, since: float = 0.0, until: float = math.inf) -> float | None:
        values = [value for when, value in self.samples if since <= when <= until]
        return max(values) if values else None


def run_mode(name: str, groups: list[tuple[int, int]], args: argparse.Namespace, scratch: Path,
             smi: SmiSampler, capture: str = "off") -> dict:
    """Start one worker per (first member, members) in `groups`, all at once (a pack's step
    captured when `capture` is on); start their timed windows together once every one is warm;
    gather their figures."""
    sync = Path(tempfile.mkdtemp(prefix="mode-", dir=scratch))
    print(f"[{name}] starting {len(groups)} process(es)", flush=True)
    baseline = smi.read()
    smi.start()
    launched = time.time()
    procs, logs = [], []
    for index, (first, members) in enumerate(groups):
        log = open(sync / f"log-{index}.txt", "w")  # noqa: SIM115 (closed below)
        command = [
            sys.executable, str(Path(__file__).resolve()), "--worker",
            "--index", str(index), "--first-member", str(first), "--members", str(members), "--sync", str(sync),
            "--device", args.device, "--data-dir", args.data_dir, "--train-images", str(args.train_images),
            "--model", args.model, "--batch-size", str(args.batch_size), "--lr", str(args.lr),
            "--momentum", str(args.momentum), "--weight-decay", str(args.weight_decay),
            "--steps", str(args.steps), "--warmup", str(warmup_steps(args.warmup, capture)), "--threads", str(args.threads),
            "--timeout", str(args.timeout), "--channels-last", args.channels_last, "--capture", capture,
        ]
        procs.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT))
        logs.append(log)
    try:
        failure = wait_ready(procs, sync, args.timeout)
        if failure is None:
            print(f"[{name}] all warm after {time.time() - launched:.1f} s; timing {args.steps} steps", flush=True)
            go_wall = time.time()
            (sync / "go").touch()
            failure = wait_done(procs, args.timeout)
    finally:
        for proc in procs:  # only on a failure or a timeout are any still running
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for log in logs:
            log.close()
        smi.stop()
    if failure is not None:
        print(f"[{name}] FAILED: {failure}", flush=True)
        for index in range(len(procs)):
            tail = (sync / f"log-{index}.txt").read_text().splitlines()[-25:]
            print(f"  --- worker {index} log (last {len(tail)} lines) ---\n" + "\n".join(f"  {line}" for line in tail))
        return {"mode": name, "capture": capture, "failed": failure}

    workers = [json.loads((sync / f"result-{index}.json").read_text()) for index in range(len(procs))]
    last_end = max(w["end_wall"] for w in workers)
    wall = last_end - go_wall
    samples = sum(w["samples"] for w in workers)
    overlap = max(0.0, min(w["end_wall"] for w in workers) - max(w["start_wall"] for w in workers))
    reserved = [w["peak_reserved_mib"] for w in workers]
    allocated = [w["peak_allocated_mib"] for w in workers]
    smi_window = smi.peak(go_wall, last_end)
    members = sum(w["members"] for w in workers)
    result = {
        "mode": name,
        "capture": capture,
        "captured": all(w["captured"] for w in workers if w["members"] > 1),
        "processes": len(workers),
        "members": members,
        "samples": samples,
        "wall_s": wall,
        "samples_per_s": samples / wall,
        # One member's step as the mode trains them all: the mode's wall time over its member-steps.
        "ms_per_member_step": wall * 1e3 / (args.steps * members),
        # Every worker's own rate, added up: equals samples_per_s when their windows coincide.
        "sum_of_worker_rates": sum(w["samples_per_s"] for w in workers),
        "overlap_fraction": overlap / wall if wall > 0 else None,
        "peak_allocated_mib_sum": sum(allocated) if None not in allocated else None,
        "peak_reserved_mib_sum": sum(reserved) if None not in reserved else None,
        "smi_baseline_mib": baseline,
        "smi_peak_timed_mib": smi_window,
        "smi_peak_mib": smi.peak(),
        "device_used_mid_mib": max((w["device_used_mid_mib"] for w in workers if w["device_used_mid_mib"]), default=None),
        "workers": workers,
    }
    per_step = ", ".join(f"{w['ms_per_step']:.1f}" for w in workers)
    print(f"[{name}] {result['samples_per_s']:,.0f} samples/s over {wall:.2f} s; {result['ms_per_member_step']:.2f} ms "
          f"per member-step; ms/step per process: {per_step}; "
          f"peak reserved {mib(result['peak_reserved_mib_sum'])} MiB; nvidia-smi peak {mib(smi_window)} MiB "
          f"(before: {mib(baseline)})", flush=True)
    return result


def warmup_steps(asked: int, capture: str) -> int:
    """Untimed steps of a worker: a captured pack also runs its eager warm-up and its capture there."""
    return max(asked, WARMUP_STEPS + 2) if capture == "on" else asked


def wait_ready(procs: list[subprocess.Popen], sync: Path, timeout: float) -> str | None:
    deadline = time.monotonic() + timeout
    while True:
        if all((sync / f"ready-{index}").exists() for index in range(len(procs))):
            return None
        for index, proc in enumerate(procs):
            if proc.poll() is not None:
                return f"worker {index} exited with code {proc.returncode} before it was ready"
        if time.monotonic() > deadline:
            return f"not every worker was ready within {timeout} s"
        time.sleep(0.05)


def wait_done(procs: list[subprocess.Popen], timeout: float) -> str | None:
    deadline = time.monotonic() + timeout
    for index, proc in enumerate(procs):
        try:
            code = proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            return f"worker {index} still running after {timeout} s"
        if code != 0:
            return f"worker {index} exited with code {code}"
    return None


def write_data(args: argparse.Namespace, folder: Path) -> None:
    """Random CIFAR-10-format files, then the tensor cache every worker reads (built once, here, on the CPU)."""
    from tests.vision_files import write_cifar10
    from trainables.vision_data import load_images

    started = time.perf_counter()
    args.train_images = args.train_images // 5 * 5  # five files of equal size, as CIFAR-10 ships
    write_cifar10(folder, per_batch=args.train_images // 5, test=max(64, args.train_images // 5))
    load_images("cifar10", folder)  # writes <folder>/pbt-cache/cifar10.pt
    print(f"wrote {args.train_images} random training images in CIFAR-10's format "
          f"in {time.perf_counter() - started:.1f} s", flush=True)


def mib(value: float | None) -> str:
    return f"{value:,.0f}" if value is not None else "-"


def report(results: list[dict], args: argparse.Namespace) -> None:
    done = [r for r in results if "failed" not in r]
    if not done:
        print("every mode failed")
        return
    any_worker = done[0]["workers"][0]
    print()
    print(f"{any_worker['device']}, torch {any_worker['torch']}, cuDNN {any_worker['cudnn']}")
    print(f"{any_worker['model']} (CIFAR-10, {any_worker['train_images']} training images), SGD, batch "
          f"{any_worker['batch_size']} per member; bf16 autocast {'on' if any_worker['autocast_bf16'] else 'off'}, "
          f"channels_last {'on' if any_worker['channels_last'] else 'off'}, cudnn.benchmark "
          f"{'on' if any_worker['cudnn_benchmark'] else 'off'}; {args.steps} timed steps after {args.warmup} "
          f"warm-up steps; data on the device {any_worker['data_mib']:.0f} MiB per process (a pack keeps its lead's only)")
    alone = next((r for r in done if r["mode"] == "1 alone"), None)
    base = alone["samples_per_s"] if alone else None
    header = (f"  {'mode':<28}{'members':>8}{'samples/s':>12}{'x alone':>9}{'per member/s':>14}{'ms/member-step':>16}"
              f"{'peak alloc':>12}{'peak reserved':>15}{'nvidia-smi':>12}")
    print(header)
    print("  " + "-" * (len(header) - 2))
    for r in results:
        if "failed" in r:
            print(f"  {r['mode']:<28}FAILED: {r['failed']}")
            continue
        ratio = f"{r['samples_per_s'] / base:.2f}x" if base else "-"
        smi = r["smi_peak_timed_mib"]
        if smi is not None and r["smi_baseline_mib"] is not None:
            smi -= r["smi_baseline_mib"]
        print(f"  {r['mode']:<28}{r['members']:>8}{r['samples_per_s']:>12,.0f}{ratio:>9}"
              f"{r['samples_per_s'] / r['members']:>14,.0f}{r['ms_per_member_step']:>16.3f}{mib(r['peak_allocated_mib_sum']):>12}"
              f"{mib(r['peak_reserved_mib_sum']):>15}{mib(smi):>12}")
    print("  (memory in MiB: torch's peaks summed over the mode's processes; nvidia-smi: the GPU's peak during the\n"
          "   timed window less what it held before the mode started, CUDA contexts included)")
    for r in done:
        if r["processes"] > 1:
            print(f"  {r['mode']}: windows overlapped {r['overlap_fraction']:.0%} of the wall time; sum of the "
                  f"processes' own rates {r['sum_of_worker_rates']:,.0f} samples/s; per process:")
            for w in r["workers"]:
                print(f"    process {w['index']}: {w['samples_per_s']:>9,.0f} samples/s, {w['ms_per_step']:6.1f} ms/step, "
                      f"peak reserved {mib(w['peak_reserved_mib'])} MiB, mean loss {w['mean_loss'][0]}")
        else:
            w = r["workers"][0]
            extra = f"; built by {w['built_by']}, step {'captured' if w['captured'] else 'eager'}" if w["members"] > 1 else ""
            losses = w["mean_loss"]
            print(f"  {r['mode']}: {w['ms_per_step']:.1f} ms/step, built in {w['build_s']:.1f} s, warm-up "
                  f"{w['warmup_s']:.1f} s, mean loss {min(losses)}..{max(losses)}{extra}")
    shared = next((r for r in done if "processes" in r["mode"]), None)
    for r in (r for r in done if "packed" in r["mode"] and shared):  # issue 23's target: a pack of 16 at 3x four processes
        print(f"  {r['mode']}: {r['samples_per_s'] / shared['samples_per_s']:.2f}x {shared['mode']}")
    for r in done:  # what autocast really did, per mode (the pack runs its model under vmap)
        w = r["workers"][0]
        print(f"  {r['mode']}: convolutions ran in {'/'.join(w['conv_output_dtypes']) or '-'}, the classifier in "
              f"{'/'.join(w['linear_output_dtypes']) or '-'}"
              + "".join(f"\n    warning: {message}" for message in w["warnings"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--procs", default="4", help="comma list: processes sharing the GPU, one member each (0: skip)")
    parser.add_argument("--packs", default="16,64", help="comma list: members packed in one process (0: skip)")
    parser.add_argument("--capture", default="off,on",
                        help="comma list of off/on: each pack size is measured with its step eager (off) and captured "
                        "as a CUDA graph and replayed (on)")
    parser.add_argument("--no-alone", action="store_true", help="skip the one-member-on-the-whole-GPU mode")
    parser.add_argument("--steps", type=int, default=150, help="timed training steps per process")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps first, at least 1 (cuDNN picks its kernels)")
    parser.add_argument("--train-images", type=int, default=50000, help="random images written (CIFAR-10 has 50,000)")
    parser.add_argument("--data-dir", default=None, help="real CIFAR-10 files (default: random ones in a temp folder)")
    parser.add_argument("--model", default="resnet20", choices=["resnet20", "resnet56"])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.05, help="middle of the members' spread (0.8x .. 1.2x)")
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per process (Ray gives a trial 1 CPU)")
    parser.add_argument("--timeout", type=float, default=240, help="seconds a mode's processes may take to warm up, and to finish")
    parser.add_argument("--channels-last", default="on", choices=["on", "off"],
                        help="the trainer's channels_last setting (on: its default on CUDA)")
    parser.add_argument("--json", default=None, help="write every figure here")
    # The worker's side (this script started by itself).
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--first-member", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--members", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--sync", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.warmup = max(1, args.warmup)  # the first warm-up step is the one probed
    if args.worker:
        worker(args)
        return

    print(f"torch {torch.__version__}, python {sys.version.split()[0]}, device {args.device}", flush=True)
    procs = [n for n in (int(v) for v in args.procs.split(",") if v.strip()) if n > 0]
    packs = [n for n in (int(v) for v in args.packs.split(",") if v.strip()) if n > 0]
    captures = [word.strip() for word in args.capture.split(",") if word.strip()]
    if not captures or set(captures) - {"off", "on"}:
        parser.error(f"--capture takes off, on or off,on, but got {args.capture!r}")
    modes = [] if args.no_alone else [("1 alone", [(0, 1)], "off")]
    modes += [(f"{n} processes (gpu {1 / n:.3g})", [(member, 1) for member in range(n)], "off") for n in procs]
    modes += [(f"{n} packed{', captured' if capture == 'on' else ''}", [(0, n)], capture) for n in packs for capture in captures]
    smi = SmiSampler()
    smi.available = smi.available and args.device == "cuda"

    results = []
    with tempfile.TemporaryDirectory(prefix="bench-gpu-packed-") as scratch:
        scratch_path = Path(scratch)
        if args.data_dir is None:
            args.data_dir = str(scratch_path / "data")
            write_data(args, Path(args.data_dir))
        else:
            args.data_dir = str(Path(args.data_dir).expanduser().resolve())
            from trainables.vision_data import load_images

            args.train_images = len(load_images("cifar10", args.data_dir).x_train)  # builds the cache once
        for name, groups, capture in modes:
            results.append(run_mode(name, groups, args, scratch_path, smi, capture))
            if args.json:  # after every mode: a run cut short still leaves what it measured
                Path(args.json).write_text(json.dumps({"args": vars(args), "modes": results}, indent=2))
    report(results, args)
    if args.json:
        print(f"figures written to {args.json}")
    failed = [r["mode"] for r in results if "failed" in r]
    if failed:  # scripts/gpu_check.sh counts the benchmark as failed then
        raise SystemExit(f"{len(failed)} mode(s) failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()

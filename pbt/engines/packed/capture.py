"""A pack's training step captured once as a CUDA graph and replayed (`population.capture`).

Why: on a GPU a pack of small models is bound by kernel launches and Python, not arithmetic (a
ResNet-20 pack's step took 31-34 ms on an H100 whether it held 4 or 16 members, BENCHMARKS.md).
A replayed graph launches the forward, backward and stacked optimizer step of every member at once.

A graph replays the memory addresses it was captured with, so everything it reads stays put:
- the step's input is one static buffer the batch indices (drawn on the device) are copied into;
- the stacked weights, buffers and optimizer state, and the per-member lr, momentum and weight
  decay (`PackedOptimizer`'s (K,) device tensors), are only ever changed in place: an explore fills
  values, an exploit copies rows, a checkpoint loads with `copy_`. None of them re-captures.

Off the GPU (or with `graphed=False`) `StaticStep` runs the same step eagerly on the same static
buffer, which is what the CPU tests check.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Literal

import torch
from torch import Tensor

CaptureSetting = Literal["auto", "on", "off"]
# Eager steps before the capture, on a side stream (PyTorch's CUDA-graph notes): cuDNN's benchmark
# picks its kernels, cuBLAS and autograd set up their workspaces and streams, all outside the graph.
WARMUP_STEPS = 3
Step = Callable[[Tensor], tuple[Tensor, ...]]


def capture_wanted(setting: CaptureSetting, device: torch.device) -> bool:
    """Whether a pack on `device` replays its step as a CUDA graph: `on` captures on CUDA; `auto` is
    off until a GPU measurement shows capture faster (issue 23: `scripts/gpu_check.sh`)."""
    return setting == "on" and device.type == "cuda"


@contextlib.contextmanager
def autocast_cache_off() -> Iterator[None]:
    """Autocast's cache of cast weights off, for the autocast contexts entered inside (they inherit
    it): a cast cached during capture would be a graph tensor that the cache frees on exit."""
    previous = torch.is_autocast_cache_enabled()
    torch.set_autocast_cache_enabled(False)
    try:
        yield
    finally:
        torch.set_autocast_cache_enabled(previous)


class StaticStep:
    """`step` over a fixed input buffer: on CUDA (`graphed`) run eagerly `warmup` times, then
    captured once and replayed; otherwise run eagerly on the buffer every call.

    `step(indices)` must read its input only through the tensor it is given, change what outlives
    the step only in place, and return tensors; no host sync inside (a capture refuses one).
    `before_capture` drops what the step creates anew (gradients), so that the capture allocates
    it in the graph's own memory, as PyTorch's whole-network capture does.
    """

    def __init__(
        self, step: Step, example: Tensor, graphed: bool, warmup: int = WARMUP_STEPS,
        before_capture: Callable[[], None] = lambda: None,
    ) -> None:
        self.step, self.graphed, self.warmup, self.before_capture = step, graphed, warmup, before_capture
        self.input = torch.empty(example.shape, dtype=example.dtype, device=example.device)
        self.calls = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.outputs: tuple[Tensor, ...] = ()
        self.stream = torch.cuda.Stream(example.device) if graphed else None

    @property
    def shape(self) -> torch.Size:
        return self.input.shape

    def __call__(self, indices: Tensor) -> tuple[Tensor, ...]:
        """One step on `indices` (copied into the buffer on the device: no host sync); the outputs
        are the caller's own tensors, not the graph's, which the next replay overwrites."""
        self.input.copy_(indices)
        self.calls += 1
        if not self.graphed:
            return self.step(self.input)
        if self.graph is None and self.calls <= self.warmup:
            return self._on_side_stream()
        if self.graph is None:
            self._capture()
        self.graph.replay()
        return tuple(output.clone() for output in self.outputs)

    def _on_side_stream(self) -> tuple[Tensor, ...]:
        current = torch.cuda.current_stream(self.input.device)
        self.stream.wait_stream(current)
        with torch.cuda.stream(self.stream), autocast_cache_off():
            outputs = self.step(self.input)
        current.wait_stream(self.stream)
        return tuple(output.clone() for output in outputs)

    def _capture(self) -> None:
        # Captured, not run: the replay that follows is this call's step.
        self.before_capture()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=self.stream), autocast_cache_off():
            self.outputs = self.step(self.input)
        self.graph = graph

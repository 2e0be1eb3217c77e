"""Op breakdown of one network call on the CPU: what the profile_* scripts print.

``op_breakdown(run)`` calls ``run()`` once to warm up, once under ``FlopCounterMode`` (the
floating-point work of each aten op) and once under ``torch.profiler`` (the self CPU time of
each op), then prints a table: time, share of the call, and for the ops that do arithmetic
work their GFLOP and GFLOP/s. The "glue" line sums what is neither a GEMM, a convolution
(``_convolution``'s own time included: weight reorders, and the transposed convolutions'
kernels, whose FLOPs the counter books under ``convolution``), an FFT nor attention: copies,
norms, activations and elementwise work, which are bound by memory.

``alternate(runs, repeats)`` times several callables in turn, ``repeats`` times each, and
returns their medians: speed figures on a noisy machine are ratios measured side by side.
``compare_networks(reference, ours, x, repeats)`` does that for a reference network and ours
on one input, and prints their max |difference| and the ratio of the medians.
"""

from __future__ import annotations

import statistics
import time
import typing as tp

import torch

# Profiler op names whose time is arithmetic work (the rest is glue), and how the
# FlopCounterMode names their FLOPs.
_COMPUTE_OPS = {
    "aten::addmm": ("addmm",),
    "aten::mm": ("mm",),
    "aten::bmm": ("bmm",),
    "aten::baddbmm": ("baddbmm",),
    "aten::mkldnn_convolution": ("convolution",),
    "aten::_scaled_dot_product_flash_attention_for_cpu": ("_scaled_dot_product_flash_attention_for_cpu",),
    "mkldnn::_linear_pointwise": ("_linear_pointwise",),
    "aten::_convolution": (),  # its own time (dispatch, weight reorders)
    "aten::_fft_r2c": (),
    "aten::_fft_c2r": (),
    "aten::_fft_c2c": (),
}


def _flops_by_op(run: tp.Callable[[], tp.Any]) -> dict[str, int]:
    from torch.utils.flop_counter import FlopCounterMode

    def linear_flops(x_shape, w_shape, *args, **kwargs) -> int:
        rows = 1
        for size in x_shape[:-1]:
            rows *= size
        return 2 * rows * w_shape[0] * w_shape[1]

    def attention_flops(q_shape, k_shape, v_shape, *args, **kwargs) -> int:
        batch, heads, queries, head_dim = q_shape
        return 2 * 2 * batch * heads * queries * k_shape[-2] * head_dim

    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: attention_flops}
    if hasattr(torch.ops, "mkldnn") and hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        mapping[torch.ops.mkldnn._linear_pointwise] = linear_flops
    counter = FlopCounterMode(display=False, custom_mapping=mapping)
    with counter:
        run()
    totals: dict[str, int] = {}
    for op, flops in counter.get_flop_counts().get("Global", {}).items():
        name = str(op).split(".")[-1] if "." in str(op) else str(op)
        totals[name] = totals.get(name, 0) + int(flops)
    return totals


def op_breakdown(run: tp.Callable[[], tp.Any], title: str, rows: int = 14,
                 gemm_peak_gflops: float | None = None) -> dict[str, float]:
    """Print the op table of one ``run()``; returns {'total_s', 'glue_s', 'gflop'}."""
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode():
        run()
        flops = _flops_by_op(run)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            started = time.perf_counter()
            run()
            wall = time.perf_counter() - started
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    total_self = sum(e.self_cpu_time_total for e in events) / 1e6
    total_flops = sum(flops.values())
    print(f"\n{title}: {wall:.2f} s under the profiler, {total_flops / 1e9:.1f} GFLOP counted"
          + (f", GEMM peak {gemm_peak_gflops:.0f} GFLOP/s" if gemm_peak_gflops else ""))
    print(f"  {'op':<52}{'calls':>6}{'time':>9}{'share':>7}{'GFLOP':>8}{'GFLOP/s':>9}")
    compute = 0.0
    for index, event in enumerate(events):
        seconds = event.self_cpu_time_total / 1e6
        names = _COMPUTE_OPS.get(event.key)
        if names is not None:
            compute += seconds
        if index >= rows:
            continue
        gflop = sum(flops.get(name, 0) for name in (names or ())) / 1e9
        rate = f"{gflop / seconds:9.0f}" if gflop else f"{'':9}"
        gflop_text = f"{gflop:8.1f}" if gflop else f"{'':8}"
        print(f"  {event.key[:51]:<52}{event.count:>6}{seconds:8.2f}s{seconds / total_self:6.0%}"
              f"{gflop_text}{rate}")
    glue = total_self - compute
    print(f"  {'glue (copies, norms, activations, elementwise)':<52}{'':6}{glue:8.2f}s"
          f"{glue / total_self:6.0%}")
    return {"total_s": total_self, "glue_s": glue, "gflop": total_flops / 1e9}


def compare_networks(reference: tp.Callable, ours: tp.Callable, x: torch.Tensor, repeats: int,
                     reference_name: str = "demucs") -> dict[str, float]:
    """Max |ours(x) - reference(x)| (absolute, and relative to the reference's peak; ours
    reshaped to the reference's shape), then both timed in turn (:func:`alternate`); prints
    the medians and their ratio, and returns the medians by name (``reference_name``,
    "stemsplit")."""
    with torch.inference_mode():
        expected = reference(x)
        difference = float((ours(x).reshape(expected.shape) - expected).abs().max())
    print(f"max |stemsplit - {reference_name}| on the input: {difference:.2e} "
          f"({difference / float(expected.abs().max()):.2e} of the peak)")
    medians = alternate({reference_name: lambda: reference(x), "stemsplit": lambda: ours(x)},
                        repeats)
    print(f"network time per call, median of {repeats}: {reference_name} "
          f"{medians[reference_name]:.2f} s, stemsplit {medians['stemsplit']:.2f} s, "
          f"ratio {medians[reference_name] / medians['stemsplit']:.2f}x")
    return medians


def gemm_peak(threads: int, size: int = 2048, repeats: int = 5) -> float:
    """fp32 GEMM rate (GFLOP/s) of a square ``size`` matmul on ``threads`` threads."""
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - started)
    return 2 * size ** 3 / best / 1e9


def alternate(runs: dict[str, tp.Callable[[], tp.Any]], repeats: int) -> dict[str, float]:
    """Median wall seconds of each callable, called in turn ``repeats`` times (after one
    warm-up call each); prints every timing."""
    times: dict[str, list[float]] = {label: [] for label in runs}
    with torch.inference_mode():
        for run in runs.values():
            run()
        for repeat in range(repeats):
            for label, run in runs.items():
                started = time.perf_counter()
                run()
                times[label].append(time.perf_counter() - started)
                print(f"  run {repeat + 1} {label:<12} {times[label][-1]:6.2f} s", flush=True)
    return {label: statistics.median(values) for label, values in times.items()}

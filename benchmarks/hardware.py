"""The machine: its name, its measured matmul peak, and the peak memory of a piece of work."""
from __future__ import annotations

import ctypes
import os
import platform
import re
import time

import torch


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_name(device: torch.device) -> str:
    """`cpu-<model>-<N>cores` or the GPU's name, as a file name."""
    if device.type == "cuda":
        return slug(torch.cuda.get_device_name(device))
    return f"cpu-{slug(cpu_model())}-{os.cpu_count()}cores"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, sizes: tuple[int, ...], seconds: float = 1.0) -> dict:
    """Best FLOP/s of square matmuls (fp32 on CPU with torch's thread count, bf16 on GPU), each size
    repeated for about `seconds`: on a shared machine the best run is the one least disturbed."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    by_size = {}
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        torch.mm(a, b)  # warm-up: thread pool, GPU kernels
        best, spent, runs = float("inf"), 0.0, 0
        while runs < 3 or (spent < seconds and runs < 100):
            synchronize(device)
            start = time.perf_counter()
            torch.mm(a, b)
            synchronize(device)
            elapsed = time.perf_counter() - start
            best, spent, runs = min(best, elapsed), spent + elapsed, runs + 1
        by_size[n] = 2 * n**3 / best
        del a, b
    return {"dtype": str(dtype).replace("torch.", ""), "threads": torch.get_num_threads(),
            "flops_per_s": max(by_size.values()), "by_size": {str(n): f for n, f in by_size.items()}}


class PeakMeter:
    """The best matmul FLOP/s seen in a run: measured at the start and again (briefly) whenever asked.

    On a machine shared with other work one measurement can fall in a busy moment; MFU is then
    reported against the best, so that it is not inflated by a low peak.
    """

    def __init__(self, device: torch.device, sizes: tuple[int, ...]):
        self.device, self.sizes = device, sizes
        self.result = matmul_peak(device, sizes)

    def refresh(self) -> None:
        again = matmul_peak(self.device, self.sizes[:1], seconds=0.3)
        for n, f in again["by_size"].items():
            self.result["by_size"][n] = max(f, self.result["by_size"][n])
        self.result["flops_per_s"] = max(self.result["by_size"].values())

    @property
    def flops_per_s(self) -> float:
        return self.result["flops_per_s"]


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {field}")


class Memory:
    """Peak memory of the work done after `start()`, above the memory in use when this was made.

    On a GPU: torch's allocator statistics. On Linux CPUs: the process's resident-set high-water
    mark, which writing 5 to /proc/self/clear_refs resets. Elsewhere: None.
    """

    def __init__(self, device: torch.device):
        self.device = device
        if device.type == "cuda":
            torch.cuda.empty_cache()
            self.base = torch.cuda.memory_allocated(device)
        else:
            self.base = self._trimmed_rss()

    def _trimmed_rss(self) -> int | None:
        try:
            # memory freed by earlier work stays in malloc's pools and would hide new allocations
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            return _rss_kb("VmRSS") * 1024
        except OSError:
            return None

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.base is not None:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")

    def peak_mb(self) -> float | None:
        if self.device.type == "cuda":
            return (torch.cuda.max_memory_allocated(self.device) - self.base) / 2**20
        if self.base is None:
            return None
        return (_rss_kb("VmHWM") * 1024 - self.base) / 2**20

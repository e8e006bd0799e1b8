"""Resident-set measurements of the CPU benchmarks (Linux /proc; getrusage elsewhere)."""

from __future__ import annotations

__all__ = ["MALLOC_ENV", "_reset_rss_peak", "_rss_peak_bytes"]

#: Environment of the benchmark workers: a fixed glibc mmap threshold (128 KiB), so every
#: large block is mmapped and returned on free. With glibc's default dynamic threshold, a
#: freed block raises the threshold, later chunk scratch comes from the heap and stays
#: resident, and the measured peak varies from run to run (0.42-0.60 of the textbook
#: implementation's at V = 32000, N = 256; 0.475 every time with the fixed threshold).
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(1 << 17)}


def _reset_rss_peak() -> None:
    """Reset the resident-set high-water mark (Linux: ``5 > /proc/self/clear_refs``), so that
    the peak measured next is the measured step's, not a transient of the imports."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:  # pragma: no cover - non-Linux: the process-lifetime peak is used
        pass


def _rss_peak_bytes() -> int:
    """Resident-set high-water mark (Linux ``VmHWM``, else ``getrusage``'s ``ru_maxrss``)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):  # pragma: no cover - non-Linux
        pass
    import resource  # optional: POSIX only

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB

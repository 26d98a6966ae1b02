"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import resource

import jax


def peak_memory(compiled) -> str:
  """Device peak memory, or on a CPU XLA's plan and the process max RSS."""
  stats = jax.local_devices()[0].memory_stats() or {}
  if 'peak_bytes_in_use' in stats:
    return f'{stats["peak_bytes_in_use"] / 2**30:.2f} GiB device peak'
  analysis = compiled.memory_analysis()
  planned = (analysis.temp_size_in_bytes + analysis.argument_size_in_bytes +
             analysis.output_size_in_bytes) / 2**30
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
  return f'{planned:.2f} GiB XLA-planned (args + temps + outputs), {rss:.2f} GiB process max RSS'

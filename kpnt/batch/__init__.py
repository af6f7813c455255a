"""The batch engine: many raws denoised into outputs, reliably.

How a batch runs:

- Inputs: files, folders (searched recursively for raw suffixes), glob
  patterns; outputs mirror the input tree under the output folder, which is
  checked once before any work (a folder, writable) and never searched for
  inputs.  Existing outputs are skipped unless ``force``; an output that
  would replace an input, or a folder in an output's place, fails that file.
- Each file: decoded in a supervised child process (a LibRaw crash, hang or
  memory blow-up fails that file only), noise level chosen, denoised in
  tiles, checked (no NaN/inf, not black everywhere), written atomically (a
  temp file renamed: no partial output under the output's name, ever).
- Runners: serial (CPU default: the next file decoded while this one is
  denoised), pipelined (GPU default: decode and write threads around the
  device thread), worker processes (``--jobs``/``--devices``; a dead worker
  fails its file and is replaced).
- Failures: one line per file, the batch goes on; a full disk or read-only
  file system stops it (every later file would fail the same way).
  SIGINT and SIGTERM stop it cleanly (temp file removed, summary, exit
  130/143); temp files of killed runs are removed by the next run.

Modules, one job each:

- :mod:`~kpnt.batch.types`: Settings, Task, FileResult.
- :mod:`~kpnt.batch.formats`: output-format registry (dng, tiff, ...).
- :mod:`~kpnt.batch.inputs`: inputs found, output folder checked, tasks planned.
- :mod:`~kpnt.batch.decoder`: raws decoded in supervised child processes.
- :mod:`~kpnt.batch.models`: weights loaded once per sensor; non-finite guard.
- :mod:`~kpnt.batch.processor`: one file: decode, noise, denoise, check, write.
- :mod:`~kpnt.batch.serial`, :mod:`~kpnt.batch.pipelined`, :mod:`~kpnt.batch.pool`:
  the runners (in process; in process with I/O threads; worker processes).
- :mod:`~kpnt.batch.signals`: SIGINT/SIGTERM stop a batch cleanly.
- :mod:`~kpnt.batch.engine`: picks the runner (:func:`run_batch`).

Importing this package does not import torch or rawpy.
"""
from kpnt.batch.engine import count, cores, default_io_workers, not_reported, plan_slots, run_batch, start_decoders
from kpnt.batch.formats import FORMATS, OutputFormat, get_format
from kpnt.batch.inputs import RAW_SUFFIXES, collect_inputs, plan_tasks, prepare_output_folder
from kpnt.batch.processor import FileProcessor
from kpnt.batch.signals import StopSignals
from kpnt.batch.types import FileResult, Settings, Task

__all__ = [
    "FORMATS", "OutputFormat", "get_format", "RAW_SUFFIXES", "collect_inputs", "plan_tasks", "prepare_output_folder",
    "FileProcessor", "FileResult", "Settings", "Task", "StopSignals", "run_batch", "plan_slots", "default_io_workers",
    "cores", "count", "not_reported", "start_decoders",
]

"""The batch engine: many raws denoised into outputs, reliably.

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
from kpnt.batch.engine import count, cores, default_io_workers, not_reported, plan_slots, run_batch
from kpnt.batch.formats import FORMATS, OutputFormat, get_format
from kpnt.batch.inputs import RAW_SUFFIXES, collect_inputs, plan_tasks, prepare_output_folder
from kpnt.batch.processor import FileProcessor
from kpnt.batch.signals import StopSignals
from kpnt.batch.types import FileResult, Settings, Task

__all__ = [
    "FORMATS", "OutputFormat", "get_format", "RAW_SUFFIXES", "collect_inputs", "plan_tasks", "prepare_output_folder",
    "FileProcessor", "FileResult", "Settings", "Task", "StopSignals", "run_batch", "plan_slots", "default_io_workers",
    "cores", "count", "not_reported",
]

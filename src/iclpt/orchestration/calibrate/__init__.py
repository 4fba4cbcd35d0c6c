"""A run plan measured on this device: time a few training steps and decoding batches of each configured model
at the config's lengths, count the config's tokens, and estimate every rule's hours (``plan.py --calibrate``).

The package does one thing per module:

- :mod:`.rules`: what the workflow says of each rule (:class:`RuleFacts`, read by ``workflow/scripts/plan.py``
  from the parsed Snakefile: threads, ``gpu``, script, params, ``model`` constraint) and which measurement its
  jobs get (:func:`job_kind`): training or decoding (a ``model_path`` param and a script that runs the training
  or the decoding job), making model folders, embedding, downloading (not measurable: the config's guess), or
  start-up only; threads capped by the cores, and slots = cores // threads (at most ``--gpus`` for GPU rules).
- :mod:`.workload`: the records the jobs read (prepared data, else the configured files through the task adapter,
  else the task's example files with its published sizes), rendered by the jobs' own builder
  (:func:`iclpt.engine.prompting.build_examples`) with stand-in demos (BM25 or a seeded draw), and the padded
  tokens of a training step (the job's sampler, bucketing as configured) and of a dev pass.
- :mod:`.models`: where each model comes from (the run's folder, a tiny build, the packaged model's cache, a
  hub id), with the seconds a build or fetch took.
- :mod:`.throughput`: ``steps`` optimizer steps of the job's public step (:func:`iclpt.engine.training.train_step`)
  after a warm-up, one dev pass, and ``batches`` batches of ``predict.batch_size`` test rows through
  :class:`iclpt.engine.generation.Decoder` for each decoding layout; threads: the rule's (capped by the cores).
- :mod:`.startup`: a job's start-up in a fresh ``python`` (``snakemake.script``, the script's modules, the model
  or encoder load) and the slowdown of ``slots`` jobs at once (a matmul probe alone, then ``slots`` copies).
- :mod:`.estimate`: per job start-up + steps x step time + dev passes x dev time (training), start-up + batches
  x batch time (decoding); per rule jobs x seconds x slowdown / slots, assuming the slots stay full (for the demo
  the sum of its job times over 2 slots is within 2% of its measured wall time). GPU jobs get no slowdown. A
  model that cannot be loaded leaves its jobs to the config's ``resources.<rule>.gpu_hours_per_job`` guesses,
  marked as guesses.
- :mod:`.run`: the calibration (:func:`calibrate`); :mod:`.report`: the table (:func:`format_calibrated`).
"""

from iclpt.orchestration.calibrate.report import format_calibrated
from iclpt.orchestration.calibrate.rules import RuleFacts, job_kind
from iclpt.orchestration.calibrate.run import calibrate

__all__ = ["RuleFacts", "calibrate", "format_calibrated", "job_kind"]

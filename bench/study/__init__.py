"""The study tools, above the run core: each reads finished run folders through the run-folder format's owner
(:func:`geomstruct.run_folder.finished_runs`, :func:`geomstruct.run_folder.read_record`, docs/run-folder.md) and
writes a result of the study (docs/usage.md#the-study-tools).

- :mod:`bench.study.tune`: select every loss configuration's recipe from a tuning suite (``recipes.json``);
- :mod:`bench.study.doubling`: the convergence check of a step budget (``study/results/doubling*.{json,md}``);
- :mod:`bench.study.few_shot_tune`: select the few-shot protocol on val (``study/results/few_shot/protocol.*``);
- :mod:`bench.study.reference`: reference rows (supervised ceiling, random floor, teacher zero-shot, random-init
  few-shot) and the supervised-ceiling curve (``study/results/ceiling_curve.*``);
- :mod:`bench.study.teacher_calibration`: calibrate the synthetic teacher to CLIP's 2D geometry.

Each has its CLI: ``python -m bench.study.<tool> --help``.
"""

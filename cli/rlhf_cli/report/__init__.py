"""`rlhf report DIR`: one self-contained HTML page about a run, plus each plot as a PNG.

Torch-free: it reads what the stages left on the volume (report.json, TensorBoard logs,
eval/), so it runs on a laptop against a copy of a cluster run's volume as well. Needs the
`report` extra (matplotlib, tensorboard), which `train` includes.
"""

"""`rlhf-train <stage> --config FILE`: run one stage from its config file.

Exit codes: 0 succeeded, 1 failed while running, 2 bad config or input values (including an
input stage that did not hand over a finished model), 143 preempted: SIGTERM arrived, a
checkpoint of the current step was saved and a rerun resumes there. A failure prints one line on
stderr ("rlhf-train: error: <field>: <problem>") and, when the output directory is known,
records it in result.json.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rlhf_api.layout import result_path
from rlhf_api.result import EXIT_CONFIG, EXIT_FAILED, StageResult, write_result
from rlhf_api.stages import STAGES, kind_of
from rlhf_api.trainer_job import TrainerJobConfig

from . import preemption

PROG = "rlhf-train"


def _fail(message: str, code: int) -> int:
    sys.stderr.write(f"{PROG}: error: {message}\n")
    sys.stderr.flush()
    return code


def _read_file(path: str) -> Any:
    text = Path(path).read_text()
    if path.endswith(".json"):
        return json.loads(text)
    import yaml

    return yaml.safe_load(text)


def _validation_message(exc: Any) -> str:
    """The first pydantic error as 'field.path: message' (camelCase, as in the file)."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    text = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    return f"{where}: {text}" if where else text


def _record_config_failure(raw: Any, stage: str, message: str) -> None:
    """Best effort result.json for a config that did not validate but names an output dir."""
    out = raw.get("outputDir") if isinstance(raw, dict) else None
    if not isinstance(out, str) or not out or stage not in STAGES:
        return
    now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    try:
        Path(out).mkdir(parents=True, exist_ok=True)
        result = StageResult(
            stage=stage,  # type: ignore[arg-type]
            status="failed",
            output_path=out,
            message=message,
            started_at=now,
            finished_at=now,
        )
        if int(os.environ.get("RANK", "0")) == 0:
            write_result(result, result_path(out))
    except (OSError, ValueError):
        pass


def _read_config(path: str) -> Any:
    """The config file's content; raises ValueError with a one-line message."""
    try:
        return _read_file(path)
    except OSError as exc:
        raise ValueError(f"--config: cannot read '{path}': {exc.strerror or exc}") from exc
    except ValueError as exc:  # JSON and YAML errors are ValueErrors
        raise ValueError(f"--config: '{path}' is not valid YAML/JSON: {str(exc).splitlines()[0]}") from exc


def _validate(raw: Any) -> TrainerJobConfig:
    """Raises ValueError with a one-line 'field: problem' message."""
    from pydantic import ValidationError

    try:
        return TrainerJobConfig.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(_validation_message(exc)) from exc


def load_config(path: str, stage: str) -> TrainerJobConfig:
    """Read and validate a stage's config; a failure is also recorded in the stage's result.json
    (raises ValueError with a one-line 'field: problem' message)."""
    raw = _read_config(path)
    try:
        cfg = _validate(raw)
    except ValueError as exc:
        _record_config_failure(raw, stage, str(exc))
        raise
    if cfg.stage != stage:
        message = f"stage: the config is for stage '{cfg.stage}', not '{stage}'"
        _record_config_failure(raw, stage, message)
        raise ValueError(message)
    return cfg


# Models up to this hidden size run with one intra-op thread (see _pick_threads).
_TINY_HIDDEN_SIZE = 256


def _is_tiny_model(name: str) -> bool:
    """The built-in tiny Llama, or a local model (e.g. a previous stage's output) as small."""
    from .builtin_sources import model

    if model(name) is not None:
        return True
    config = Path(name) / "config.json"
    if not config.is_file():
        return False
    try:
        hidden = json.loads(config.read_text()).get("hidden_size")
    except (OSError, ValueError):
        return False
    return isinstance(hidden, int) and hidden <= _TINY_HIDDEN_SIZE


def _pick_threads(cfg: TrainerJobConfig) -> None:
    """One intra-op thread for tiny models unless OMP_NUM_THREADS says otherwise.

    Their matrices (hidden size 128 for the quickstart) are far too small to split across
    threads: measured on 2 loaded cores, torch's default of 2 OpenMP threads made the
    quickstart's SFT 3-10x slower than 1 thread.
    """
    if "OMP_NUM_THREADS" in os.environ or not _is_tiny_model(cfg.model.name):
        return
    import torch

    torch.set_num_threads(1)


COMPARE = "compare"


def run_compare(path: str) -> int:
    """`rlhf-train compare --config FILE`: the stage's starting model against its merged output."""
    try:  # not load_config: a bad compare config must not overwrite the finished stage's result
        cfg = _validate(_read_config(path))
    except ValueError as exc:
        return _fail(str(exc), 2)
    from rlhf_api.layout import eval_dir, merged_dir

    from .errors import StageError
    from .model_comparison import compare_stage_output

    _pick_threads(cfg)
    try:
        summary = compare_stage_output(cfg, merged_dir(cfg.output_dir))
    except StageError as exc:
        return _fail(str(exc), exc.exit_code)
    print(f"{PROG}: compared {summary.prompts} prompts; wrote {eval_dir(cfg.work_dir)}")
    return 0


SERVE_REWARD = "serve-reward"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [SERVE_REWARD]:  # `rlhf-train serve-reward MODEL_DIR`: a reward model behind HTTP
        from .serving.reward_server import main as serve_reward

        return serve_reward(argv[1:])
    parser = argparse.ArgumentParser(prog=PROG, description="Run one RLHF training stage, or compare its output.")
    parser.add_argument(
        "stage",
        choices=[*STAGES, COMPARE],
        help="Which stage program to run; compare: the config's starting model against its merged output.",
    )
    parser.add_argument("--config", required=True, help="The stage's YAML or JSON config file.")
    args = parser.parse_args(argv)
    if args.stage == COMPARE:
        return run_compare(args.config)
    preemption.install()
    try:
        cfg = load_config(args.config, args.stage)
    except ValueError as exc:
        return _fail(str(exc), EXIT_CONFIG)

    _pick_threads(cfg)
    # Imported here so that `sft` never imports the PPO engine (and config errors stay fast).
    module_name, function = kind_of(cfg.stage).entry_point.split(":")
    result: StageResult = getattr(importlib.import_module(module_name), function)(cfg)
    code = EXIT_FAILED if result.exit_code is None else result.exit_code
    if code != 0:
        return _fail(result.message or "stage failed", code)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Stage programs: `rlhf_trainer.stages.<stage>.run(cfg) -> StageResult`, imported lazily."""

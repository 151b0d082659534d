"""rlhf_trainer: the stage programs run as `rlhf-train <stage> --config FILE`."""

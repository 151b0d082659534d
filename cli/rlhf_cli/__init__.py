"""The user-facing tools: `rlhf` (run, validate, render, estimate, report, compare) and the
cluster commands (`rlhf status/logs/...`, `kubectl rlhf`). Built on the controller package
(rlhf_operator) and the contract (rlhf_api); the controller never imports this package."""

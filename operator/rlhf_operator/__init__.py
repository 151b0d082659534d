"""The operator: plan, the one reconcile state machine, launchers, manifests, the kopf shell
(controller/), `rlhf run` (local/), reports and the `rlhf` CLI. Never imports torch or the trainer."""

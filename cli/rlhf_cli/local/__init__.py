"""`rlhf run`: the operator's state machine on one machine (runner), with a backend that runs
stage jobs as processes (backend, launcher) and a display for what a person sees (display)."""

"""What `rlhf run` shows in a terminal: live progress bars on a TTY, fewer plain lines elsewhere,
and the end-of-run summary. Implementations of the local runner's Display protocol."""

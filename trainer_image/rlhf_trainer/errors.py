"""The one exception stage code raises for bad input: it names the offending config field."""

from __future__ import annotations

from rlhf_api.result import EXIT_CONFIG, EXIT_FAILED


class StageError(Exception):
    """Bad input to a stage, e.g. StageError('dataset.fields.question', "column 'q' not in dataset").

    kind "config" (exit code 2) is a problem with the config file's values; "runtime" (exit
    code 1) is a problem found while running (data content, hardware, files).
    """

    def __init__(self, field: str, message: str, kind: str = "runtime") -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.kind = kind

    @property
    def exit_code(self) -> int:
        return EXIT_CONFIG if self.kind == "config" else EXIT_FAILED

"""Errors that tell the user what to fix. The CLI prints them without a traceback and exits 2."""

from __future__ import annotations


class FinerankError(Exception):
    """An error the user can fix; ``hint`` says how."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class DataError(FinerankError):
    """A bad row: names the file, the 1-based line, the field, the value seen and what was expected."""

    def __init__(self, path, line: int | None, field: str | None, value, expected: str, hint: str | None = None):
        self.path, self.line, self.field, self.value, self.expected = str(path), line, field, value, expected
        where = self.path if line is None else f"{self.path}:{line}"
        what = f"field '{field}'" if field else "row"
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(f"{where}: {what}: got {shown}, expected {expected}", hint)

    @property
    def reason(self) -> str:
        return f"{self.field or 'row'}: expected {self.expected}"


class ModelError(FinerankError):
    """A model that cannot be found or loaded."""


class OutputError(FinerankError):
    """An output path that must not or cannot be written (an input, a folder, a device, no such folder...): names
    the path the user gave, never a temp file."""

    def __init__(self, path, problem: str, hint: str | None = None):
        self.path = str(path)
        super().__init__(f"{self.path}: {problem}", hint)

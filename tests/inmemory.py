"""A Context for in-process tests: in-memory streams and scripted answers (like httpie's
MockEnvironment), so verbs run as a library with everything they print captured."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from dbos_migrate.context import Ask, Context, GuardedBytes, GuardedText


class InMemoryContext(Context):
    """`answers` are what a person would type at the prompts, in order (None: no terminal)."""

    def __init__(
        self, environ: Mapping[str, str] | None = None, *, answers: list[str] | None = None, **fields: Any
    ) -> None:
        if fields:  # dataclasses.replace (the reporter swaps the byte streams): a plain copy
            super().__init__(environ=dict(environ or {}), **fields)
            return
        self._out, self._err = io.StringIO(), io.StringIO()
        self._out_b, self._err_b = io.BytesIO(), io.BytesIO()
        ask: Ask | None = None
        if answers is not None:
            queue = list(answers)

            def ask(prompt: str, secret: bool) -> str | None:
                return queue.pop(0) if queue else None

        super().__init__(
            environ=dict(environ or {}),
            stdout=GuardedText(self._out),  # type: ignore[arg-type]
            stderr=GuardedText(self._err),  # type: ignore[arg-type]
            out_bytes=GuardedBytes(self._out_b),
            err_bytes=GuardedBytes(self._err_b),
            ask=ask,
        )

    def captured(self) -> tuple[str, str]:
        """(stdout, stderr) so far, the commands' output included."""
        out = self._out.getvalue() + self._out_b.getvalue().decode("utf-8", "replace")
        err = self._err.getvalue() + self._err_b.getvalue().decode("utf-8", "replace")
        return out, err

"""API fuzzing for `fiberwatch bench chaos` (and its slow test): schemathesis over every
operation of the OpenAPI document, valid and invalid data, with each of several tokens
(valid ones of each role, an invalid one, none), counting requests and 5xx answers."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class FuzzResult:
    requests: int = 0
    status_5xx: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)  # "METHOD path -> status" of 5xx
    operations: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "status_5xx": self.status_5xx,
                "operations": self.operations,
                "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
                "failures": self.failures[:20]}


def fuzz(schema: Any, tokens: list[str | None], examples: int,
         base_url: str | None = None) -> FuzzResult:
    """Run `examples` generated cases per operation and mode (positive, negative), each sent
    once per token in `tokens` (None: no Authorization header)."""
    from schemathesis import GenerationMode

    result = FuzzResult()
    for op in schema.get_all_operations():
        operation = op.ok()
        result.operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _fuzz_operation(operation, mode, tokens, examples, base_url, result)
    return result


def _fuzz_operation(operation: Any, mode: Any, tokens: list[str | None], examples: int,
                    base_url: str | None, result: FuzzResult) -> None:
    from hypothesis import HealthCheck, Phase, Verbosity, given, settings
    from hypothesis.errors import HypothesisException

    def send(case: Any) -> None:
        for token in tokens:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            try:
                r = case.call(base_url=base_url, headers=headers, timeout=30)
            except Exception as exc:  # noqa: BLE001 - a transport error is a finding too
                result.failures.append(f"{case.method} {case.formatted_path}: {exc!r}"[:300])
                continue
            result.requests += 1
            result.by_status[r.status_code] += 1
            if r.status_code >= 500:
                result.status_5xx += 1
                result.failures.append(f"{case.method} {case.formatted_path} "
                                       f"q={case.query!r} -> {r.status_code} {r.text[:200]}")

    test = settings(max_examples=examples, deadline=None, database=None,
                    phases=[Phase.generate], suppress_health_check=list(HealthCheck),
                    verbosity=Verbosity.quiet)(
        given(case=operation.as_strategy(generation_mode=mode))(send))
    try:
        test()
    except HypothesisException as exc:  # e.g. no negative case exists for this operation
        log.info("fuzz skipped operation=%s mode=%s reason=%r", operation.label, mode, str(exc))

"""A stand-in for the Lambda context object, with the attributes handlers and Powertools read."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any


@dataclass
class FakeLambdaContext:
    """What `handler(event, context)` receives in Lambda, for running handlers in-process."""

    function_name: str = "local-function"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 512
    timeout_s: float = 30.0
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    invoked_function_arn: str = ""
    log_group_name: str = ""
    log_stream_name: str = ""
    client_context: Any = None
    identity: Any = None
    _deadline: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        self._deadline = time.time() + self.timeout_s
        self.invoked_function_arn = (self.invoked_function_arn
                                     or f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}")
        self.log_group_name = self.log_group_name or f"/aws/lambda/{self.function_name}"
        self.log_stream_name = self.log_stream_name or f"local/[{self.function_version}]{self.aws_request_id[:8]}"

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds until the simulated timeout, like the real context."""
        return max(int((self._deadline - time.time()) * 1000), 0)

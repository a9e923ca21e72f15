"""`inferq status` shows the live workers and the queues they consume."""

from __future__ import annotations

import subprocess

import pytest

from tests.stack import inferq_argv


@pytest.mark.usefixtures("stack")
def test_status_lists_workers_and_queues() -> None:
    out = subprocess.run(inferq_argv("status"), check=True, capture_output=True, text=True).stdout
    workers, queues, jobs = out.split("\n\n")
    assert "echo.echo@" in workers and "llamacpp.gemma-3-270m@" in workers
    assert "inferq.echo.echo" in queues and "inferq.llamacpp.gemma-3-270m" in queues
    assert jobs.startswith("Jobs created in the last 5 minutes")

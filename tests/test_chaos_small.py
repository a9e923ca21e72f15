"""The small chaos run of `make test`: 30 jobs, 3 worker kills, one Redis restart.

Everything runs on private servers started by the harness (bench/chaos.py).
"""

from __future__ import annotations

import os
from pathlib import Path

from bench.chaos import ChaosConfig, print_table, run_chaos

from tests.conftest import API_PORT

LOG_DIR = Path(os.environ.get("INFERQ_TEST_LOG_DIR", "/tmp/inferq-test-logs")) / "chaos"


async def test_small_chaos_run_loses_nothing(settings_env: None) -> None:
    cfg = ChaosConfig(
        jobs=30,
        kills=3,
        redis_restarts=1,
        pg_restarts=0,
        workers=3,
        token_delay_s=0.03,
        api_port=API_PORT + 1,
        log_dir=str(LOG_DIR),
        deadline_s=180,
    )
    report = await run_chaos(cfg)
    print_table(cfg, report)
    assert report.lost == 0 and report.stuck == 0, report.problems
    assert report.seq_gaps == 0 and report.seq_duplicates == 0
    assert report.text_mismatches == 0, report.problems
    # A job can legitimately end failed/worker_lost if kills and the Redis restart all hit it
    # (max_attempts); anything else failing is a defect.
    assert report.bad_failures == 0 and report.completed + report.failed == report.jobs
    assert report.kills == 3 and report.rerun_s and report.rerun_max_s <= 15
    assert report.non_503_during_redis_outage == 0
    assert report.outage_statuses["redis"], "clients did call the API during the outage"

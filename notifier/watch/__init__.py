"""Where a poll happens and a diff is made: planner, quota ledger, poller, differ."""

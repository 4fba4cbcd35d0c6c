"""What the workflow runs: the method registry, run lists, config checks, code versions, calibration."""

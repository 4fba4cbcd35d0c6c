"""Shared by the report_*.py adapters: logging to the rule's log file."""

import logging


def setup_log(sm, name):
    logging.basicConfig(filename=sm.log[0], level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        force=True)
    return logging.getLogger(name)

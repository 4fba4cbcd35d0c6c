"""Data stage: official downloads, task adapters (the task registry) and prepared splits."""

"""The run engine: state machine, events, journal, verdict and exit codes."""

"""Search spaces and (later) the Optuna tuner."""

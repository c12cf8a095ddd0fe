"""Cloud trainer: synthetic data, training (DDP + AMP), evaluation gate, export, signed releases."""

"""Learning rounds: field samples + replay → fine-tune → export → gate on the shipped INT8 → signed release."""

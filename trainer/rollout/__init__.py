"""Staged rollout of a signed release: canary → wider → fleet, halted by OTA failures and quality shifts."""

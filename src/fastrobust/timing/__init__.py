"""Timing analysis: measured attack/step cost vs batch size, training-time lower bounds vs batch
size and GPU count (Figure 1), and Table I from run folders. See docs/architecture.md."""

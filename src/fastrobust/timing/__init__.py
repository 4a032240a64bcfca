"""Timing analysis: measured attack/step cost vs batch size (``measure``), training-time lower
bounds vs batch size and GPU count (Figure 1, ``plot``), Table I from run folders
(``runs_table``), their typed settings (``settings``) and the workflows the command line and the
study share (``workflow``: ``figure_one``, ``write_table_one``, ``run_timing``). See
docs/architecture.md."""

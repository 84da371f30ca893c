"""A scoring run from launch to outcome: plan, launch checks, options, the graph, progress,
signals, the summary, and what follows the pipeline (tracking figures, report)."""

"""The prior check: metrics and baselines, accumulated over a run, judged into a verdict, reported."""

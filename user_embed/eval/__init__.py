"""Evaluation: official benchmark metrics (LaMP, UQABench), baselines and reports.

Import the submodules directly (``user_embed.eval.lamp_metrics``, ``…uqabench_metrics``);
this package imports nothing on its own so that ``import user_embed`` stays light.
"""

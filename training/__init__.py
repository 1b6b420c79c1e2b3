"""Training and retraining (``catur.training``): from a trace to a model that beats greedy.

* :mod:`~catur.training.afterstate`: the shipped default's trainer, evolution strategies on
  the exact objective (the replay's average lifetime defect), selected on validation windows
  (``catur train-scorer``);
* :mod:`~catur.training.train` and :mod:`~catur.training.export`: PPO or DQN over the four
  primitives with stable-baselines3, exported to Catur's pickle-free numpy format
  (``catur train``);
* :mod:`~catur.training.collapse`, :mod:`~catur.training.drift`,
  :mod:`~catur.training.retrain`, :mod:`~catur.training.retrain_report` and
  :mod:`~catur.training.retrain_metrics`: the scheduled, drift-aware retraining job
  (``catur retrain``): is the serving model still clearly better than the fixed rules on
  recent traffic, and if not, fine-tune, validate on every cluster and promote through the
  registry.

Every trainer ends with the same gate (:mod:`catur.verdict`): a model that loses to greedy on
validation is not written. Training is the only layer that needs torch; it imports the core,
:mod:`catur.sim` and :mod:`catur.traces`, never the CLI (docs/explanation/architecture.md).
"""

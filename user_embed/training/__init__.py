"""The training recipe: a LightningModule over the inference model (module.py), the DataModule over a
prepared data folder (datamodule.py) and the learning-rate schedule of the two phases (schedule.py).

Import the submodules directly; this package imports nothing on its own (Lightning loads only here)."""

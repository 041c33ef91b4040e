"""The trainer layer: optimizer rules, the loss dispatch and the sharded
train step (the training loop, checkpoints and entry points build on these).
It may import the library packages; they never import it."""

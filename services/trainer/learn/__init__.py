"""The learn wing: online learners fed by ``examples``, saved as ModelUpdates and checkpoints."""

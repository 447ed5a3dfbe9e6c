"""The join wing: predictions paired with their feedback into labelled examples (a Faust app)."""

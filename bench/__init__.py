"""`make bench`: our serving path against the model's own limit and against peers."""

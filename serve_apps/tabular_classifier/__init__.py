"""A scikit-learn binary classifier (breast cancer), trained by `train.py`, batched."""

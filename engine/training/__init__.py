"""Walk-forward training: the fold plan (which model serves which decision times, trained on what),
one checkpoint per fold (trained only when missing, stored atomically), the forecasts of trained
predictors fold by fold, and the progress bars of a training.
"""

"""Judging: forecast skill against naive, the strategy against chance and buy-and-hold, the
random-sign baseline, the plausibility guard, the lookahead check, the trial ledger and the verdict
(significance after every trial counted).
"""

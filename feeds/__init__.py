"""Candles in, validated: historical download and cache (ccxt), file loading, live feed.

Imports no other package of the project.
"""

"""A small embedded example: synthetic tone "words" and a tiny 1-D CNN classifier.

It needs no download and trains in seconds on a CPU, so ``make demo`` shows a whole
run (data → train → metrics → report) on any machine.
"""

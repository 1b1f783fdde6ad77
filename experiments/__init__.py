"""`apiusage experiments`: per-variant statistics of a feature-flag experiment and its verdict.

`data.py` holds what the state store gives per variant, `statistics.py` the tests and
intervals (scipy and statsmodels: the `experiments` extra), `verdict.py` turns them into
plain-language lines, `render.py` prints them as markdown or terminal text.
"""

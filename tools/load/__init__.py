"""The load-test suite (``make load-test-basic`` ... ``make load-test-advanced``):
the seed's six k6 tests (tests.py) of one user model (k6/load.js), run
against the stack `make up` started, with the stack sampled (sampler.py),
faults injected (chaos.py), every acknowledged write and live message
checked for loss (checker.py), thresholds judged (verdicts.py) and a report
with plots written to ``results/load-<test>-<time>/`` (report.py).
"""

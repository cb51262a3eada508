"""The benchmark harness of `make bench`: it loads the running stack through
Envoy with wrk and k6 and reports what it saw. Run it from the repo root as
``.venv/bin/python -m tools.bench`` (__main__.py says what a run does).

Its modules, each importing only modules listed above it:
  stackapi     the requests the bench sends itself (register, log in,
               refresh, upload, post, follow, delete) and BenchError
  observe      what it reads of the stack's processes: the posts service's
               metrics and py-spy profile, resident memory, open-files limit
  model        the shared types: Settings, Scenario, Goal, Measurement
  generators   finding and running wrk and k6 (summary, peak memory)
  scenarios    the HTTP scenarios (SCENARIOS) and the ceiling
  plans        keeping under the rate limits: the source addresses
               (AddressBlock), and the login, upload, timeline, compose and
               mix plans the scripts follow
  settings     the BENCH_* settings, read and checked
  dataset      the social dataset, cached in .run/bench/, and the writers'
               pools of fresh media; cleaning up what the posting runs made
  prepare      preparation before anything is measured: accounts, tokens,
               photos, the scripts' files; deleting what upload runs uploaded
  ws_bench     the realtime scenarios, ws_sockets and ws_latency
  measure      a warm-up and a measured run of each scenario, a row each
  report       the results file and what is printed on stdout
  __main__     a run: settings, checks, preparation, measurement, report

The wrk (*.lua) and k6 (*.js) scripts the scenarios name are beside them.
"""

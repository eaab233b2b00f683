"""The run machinery: params and their rules, a stage's place in a run, the runner, preflight and plan, the report, the CLI."""

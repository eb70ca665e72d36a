"""Evaluation: choice and generate modes, the per-task loop, API models, serving.

Modules: `runner` (EvalConfig, run_eval: the loop and its output files), `choice` (answer
log-probabilities), `generate` (batched greedy decoding), `forward` (body-only forwards and the
float32 head), `fewshot` (demonstrations), `bootstrap` (intervals), `loading` (model + adapter),
`api` (OpenAI-compatible client with retries and cache), `server` (the `serve` endpoint). The
lm-evaluation-harness export is `export.lmeval`. Nothing heavy is imported here.
"""

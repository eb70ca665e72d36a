"""Evaluation: choice and generate modes, the per-task loop, API models.

Modules: `settings` (EvalFields: the settings EvalConfig shares with sweeps), `runner`
(EvalConfig, run_eval: the loop and its output files), `choice` (answer
log-probabilities), `generate` (batched greedy decoding), `forward` (body-only forwards and the
float32 head), `fewshot` (demonstrations), `bootstrap` (intervals), `loading` (model + adapter),
`api` (OpenAI-compatible client with retries and cache). The `serve` endpoint is the `serving`
package; the lm-evaluation-harness export is `export.lmeval`. Nothing heavy is imported here.
"""

"""Training: recipes → samples → model → loss → optimizer → checkpoints (`kidneyseg train`).

Small parts, each doing one thing: `data` (datasets, samplers, transforms), `losses`,
`checkpoint`, `engine` (the loop), `distributed`, `validation`, `record` (curves, CSV,
run record). Heavy libraries are imported by the submodules, not here.
"""
